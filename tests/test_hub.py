"""The Hub round trip with the real clients (huggingface_hub, datasets, diffusers) against the local Hub of
tests/hub_server.py (started by tests/conftest.py): datasets up and down, model repos, retried pushes, the
publish CLI, and a training run that pulls its data from the Hub and pushes a pipeline that loads back."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import load_dataset
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.torch import save_file

from hub_server import GITATTRIBUTES
from diffusers_simple_training.digits import load_digits_dataset
from diffusers_simple_training.hub import push_folder_to_hub
from diffusers_simple_training.publish import check_pipeline_folder
from diffusers_simple_training.publish import main as publish_main


ROOT = Path(__file__).resolve().parents[1]
DATASET_REPO = "someuser/tiny-digits"
NUM_ROWS = 200


@pytest.fixture(scope="session")
def tiny_digits(hub_server):
    """Pushes 200 of the embedded 8x8 digits (PNG images + class labels) to the local Hub as a parquet dataset;
    returns the images as one uint8 array and the labels."""
    dataset = load_digits_dataset().select(range(NUM_ROWS))
    dataset.push_to_hub(DATASET_REPO)
    return np.stack([np.asarray(image) for image in dataset["image"]]), dataset["label"]


def folder_contents(folder) -> dict[str, bytes]:
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_model_folder(folder, seed=0) -> Path:
    folder = Path(folder)
    (folder / "unet").mkdir(parents=True)
    generator = torch.Generator().manual_seed(seed)
    save_file({"weight": torch.randn(64, 64, generator=generator)}, folder / "unet" / "model.safetensors")
    (folder / "unet" / "config.json").write_text('{"sample_size": 8}\n')
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# A test model\n")
    return folder


def hub_files(hub_server, repo_id, repo_type="model") -> dict[str, bytes]:
    """The files on the main branch of a repo of the local Hub, without the `.gitattributes` every repo starts with."""
    _, files = hub_server.repo(repo_id, repo_type).snapshot("main")
    return {path: data for path, data in files.items() if path != ".gitattributes"}


def commit_statuses(hub_server, since):
    return [r.status for r in hub_server.requests[since:] if r.method == "POST" and "/commit/" in r.path]


# ----- datasets -----


def test_dataset_push_to_hub_then_load_dataset(hub_server, tiny_digits):
    images, labels = tiny_digits
    files = hub_files(hub_server, DATASET_REPO, "dataset")
    parquet = [path for path in files if path.endswith(".parquet")]
    assert parquet and "README.md" in files
    # the parquet file went up through LFS, as the Hub would store it
    assert f"/lfs-objects/{hashlib.sha256(files[parquet[0]]).hexdigest()}" in [r.path for r in hub_server.requests]

    loaded = load_dataset(DATASET_REPO, split="train")
    assert loaded.features["label"].names == [str(d) for d in range(10)]
    assert loaded["label"] == labels
    np.testing.assert_array_equal(np.stack([np.asarray(im) for im in loaded["image"]]), images)

    first = len(hub_server.requests)
    streamed = list(load_dataset(DATASET_REPO, split="train", streaming=True))
    assert [row["label"] for row in streamed] == labels
    np.testing.assert_array_equal(np.stack([np.asarray(row["image"]) for row in streamed]), images)
    assert 206 in [r.status for r in hub_server.requests[first:]]  # streaming read the parquet file by ranges


# ----- model repos -----


def test_model_repo_round_trip(hub_server, tmp_path):
    api, repo_id = HfApi(), "someuser/round-trip"
    url = api.create_repo(repo_id)
    with pytest.raises(HfHubHTTPError) as error:
        api.create_repo(repo_id)
    assert error.value.response.status_code == 409
    assert api.create_repo(repo_id, exist_ok=True) == url

    folder = write_model_folder(tmp_path / "model")
    commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="First")
    assert commit.oid == hub_server.repo(repo_id).main and len(commit.oid) == 40
    expected = folder_contents(folder)

    weights = hf_hub_download(repo_id, "unet/model.safetensors")
    assert Path(weights).read_bytes() == expected["unet/model.safetensors"]
    snapshot = snapshot_download(repo_id, revision=commit.oid)
    assert folder_contents(snapshot) == expected | {".gitattributes": GITATTRIBUTES}
    siblings = {s.rfilename: s for s in api.model_info(repo_id, files_metadata=True).siblings}
    assert siblings["unet/model.safetensors"].lfs is not None and siblings["unet/config.json"].lfs is None

    # a second commit replacing one file and deleting another; the first commit stays readable
    (folder / "unet" / "config.json").write_text('{"sample_size": 16}\n')
    (folder / "README.md").unlink()
    api.upload_folder(repo_id=repo_id, folder_path=folder, delete_patterns=["*.md"])
    assert sorted(api.list_repo_files(repo_id)) == [".gitattributes", "unet/config.json", "unet/model.safetensors"]
    assert Path(hf_hub_download(repo_id, "unet/config.json")).read_text() == '{"sample_size": 16}\n'
    assert Path(hf_hub_download(repo_id, "README.md", revision=commit.oid)).read_bytes() == expected["README.md"]

    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("someuser/no-such-repo", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("someuser/no-such-repo")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(repo_id, "unet/no-such-file.bin")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "unet/config.json", revision="no-such-branch")


# ----- push_folder_to_hub -----


def test_push_folder_to_hub_retries_server_errors(hub_server, tmp_path):
    folder, repo_id = write_model_folder(tmp_path / "model"), "someuser/flaky-push"
    local = folder_contents(folder)

    first = len(hub_server.requests)
    hub_server.fail_next_commits(2)
    commit_url = push_folder_to_hub(folder, repo_id, retries=3, backoff_seconds=0)
    assert commit_statuses(hub_server, first) == [500, 500, 200]
    assert commit_url.endswith(f"/someuser/flaky-push/commit/{hub_server.repo(repo_id).main}")
    assert hub_files(hub_server, repo_id) == local

    # all attempts fail: a clear error, nothing committed, the local folder untouched
    pushed = hub_server.repo(repo_id).main
    (folder / "unet" / "config.json").write_text('{"sample_size": 32}\n')
    local = folder_contents(folder)
    first = len(hub_server.requests)
    hub_server.fail_next_commits(3)
    with pytest.raises(RuntimeError, match=r"failed after 3 attempts over .* The local folder is unchanged"):
        push_folder_to_hub(folder, repo_id, retries=3, backoff_seconds=0)
    assert commit_statuses(hub_server, first) == [500, 500, 500]
    assert hub_server.repo(repo_id).main == pushed
    assert folder_contents(folder) == local

    # errors a retry cannot fix are raised at once
    first = len(hub_server.requests)
    hub_server.fail_next_commits(1, status=403)
    with pytest.raises(HfHubHTTPError) as error:
        push_folder_to_hub(folder, repo_id, retries=3, backoff_seconds=0)
    assert error.value.response.status_code == 403
    assert commit_statuses(hub_server, first) == [403]


def test_push_folder_to_hub_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="existing directory"):
        push_folder_to_hub(tmp_path / "missing", "someuser/x")
    with pytest.raises(ValueError, match="positive integer"):
        push_folder_to_hub(tmp_path, "someuser/x", retries=0)


# ----- publish CLI -----


def test_check_pipeline_folder_names_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match=r"model_index\.json is missing; README\.md is missing; unet/ is missing; scheduler/ is missing"):
        check_pipeline_folder(tmp_path)
    folder = write_model_folder(tmp_path / "pipeline")
    (folder / "unet" / "model.safetensors").rename(folder / "unet" / "diffusion_pytorch_model.safetensors")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text('{"_class_name": "DDPMScheduler"}\n')
    (folder / "model_index.json").write_text(
        '{"_class_name": ["pipeline_simple", "SimpleDiffusionPipeline"], "unet": ["unet_simple", "SimpleUNet"],'
        ' "scheduler": ["diffusers", "DDPMScheduler"]}'
    )
    with pytest.raises(ValueError, match=r"pipeline_simple\.py .*missing; unet/unet_simple\.py .*missing\."):
        check_pipeline_folder(folder)
    (folder / "pipeline_simple.py").write_text("")
    (folder / "unet" / "unet_simple.py").write_text("")
    check_pipeline_folder(folder)


def test_publish_cli_pushes_a_diffusers_pipeline(hub_server, tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8), norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), layers_per_block=1,
    )
    folder = tmp_path / "output"
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=10)).save_pretrained(folder)
    (folder / "README.md").write_text("---\nlibrary_name: diffusers\n---\n# Tiny DDPM\n")
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "optimizer.bin").write_bytes(b"\0" * 16)
    local = folder_contents(folder)

    publish_main([str(folder), "--hub_model_id", "someuser/published", "--private"])
    assert hub_server.repo("someuser/published").private
    assert folder_contents(snapshot_download("someuser/published")) == {
        path: data for path, data in local.items() if not path.startswith("checkpoint-")
    } | {".gitattributes": GITATTRIBUTES}
    assert folder_contents(folder) == local
    images = DDPMPipeline.from_pretrained("someuser/published")(batch_size=1, num_inference_steps=2, output_type="np")
    assert images.images.shape == (1, 8, 8, 1)


# ----- end to end: data from the Hub -> training -> pipeline on the Hub -> loads and samples elsewhere -----


SAMPLE_FROM_HUB = """
import json, sys
sys.modules["diffusers_simple"] = None  # only the code pushed with the checkpoint may be used
import numpy as np, torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
images = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np").images
print(json.dumps({"pipeline": type(pipe).__name__, "unet": type(pipe.unet).__name__, "shape": images.shape,
                  "finite": bool(np.isfinite(images).all()), "range": [float(images.min()), float(images.max())]}))
"""


def run(command, hf_home, cwd, timeout=600):
    """Runs `command` with the test environment (local Hub) and its own, empty Hugging Face cache."""
    result = subprocess.run(
        command, cwd=cwd, env={**os.environ, "HF_HOME": str(hf_home)}, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result.stdout


@pytest.mark.slow
def test_train_from_hub_dataset_push_and_sample_from_hub(hub_server, tiny_digits, tmp_path):
    output_dir, repo_id = tmp_path / "run", "someuser/the-model"
    first = len(hub_server.requests)
    run(
        [
            sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "training/train.py",
            "--dataset_name", DATASET_REPO, "--resolution", "8", "--train_batch_size", "16", "--max_train_steps", "4",
            "--block_out_channels", "16", "32", "--layers_per_block", "1", "--attention_levels", "false", "true",
            "--attention_head_dim", "8", "--norm_num_groups", "8",
            "--ddpm_num_steps", "100", "--ddpm_num_inference_steps", "2", "--eval_batch_size", "4",
            "--lr_warmup_steps", "0", "--checkpointing_steps", "2", "--seed", "0",
            "--output_dir", str(output_dir), "--push_to_hub", "--hub_model_id", repo_id,
        ],
        hf_home=tmp_path / "hf_home_train", cwd=ROOT,
    )
    # the training data came from the local Hub
    dataset_downloads = [r for r in hub_server.requests[first:] if r.method == "GET" and "/datasets/someuser/tiny-digits/resolve/" in r.path]
    assert any(r.path.endswith(".parquet") for r in dataset_downloads)

    # what was pushed is the exported pipeline folder, without the training checkpoints
    local = folder_contents(output_dir)
    assert any(path.startswith("checkpoint-") for path in local)
    pushed = hub_files(hub_server, repo_id)
    not_pushed = ("checkpoint-", "training_run.json")  # the checkpoints and the run's marker stay local
    assert pushed == {path: data for path, data in local.items() if not path.startswith(not_pushed)}
    check_pipeline_folder(output_dir)

    # a fresh process with an empty cache, where diffusers_simple cannot be imported, downloads and samples
    first = len(hub_server.requests)
    result = json.loads(run([sys.executable, "-c", SAMPLE_FROM_HUB, repo_id], hf_home=tmp_path / "hf_home_load", cwd=tmp_path).splitlines()[-1])
    assert result["pipeline"] == "SimpleDiffusionPipeline" and result["unet"] == "SimpleUNet"
    assert result["shape"] == [2, 8, 8, 1] and result["finite"] and 0 <= result["range"][0] <= result["range"][1] <= 1
    assert any(r.path.startswith(f"/{repo_id}/resolve/") and r.path.endswith(".safetensors") for r in hub_server.requests[first:])

    # the publish CLI pushes the same folder to another repo
    run([sys.executable, "-m", "diffusers_simple_training.publish", str(output_dir), "--hub_model_id", "someuser/the-model-again"],
        hf_home=tmp_path / "hf_home_publish", cwd=ROOT)
    assert hub_files(hub_server, "someuser/the-model-again") == pushed
