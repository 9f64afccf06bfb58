"""Hub faults with the real clients: a Hub that accepts connections and never answers, one whose connections time
out, one that answers 429/5xx or stalls before it succeeds; and the publish pre-check refusing incomplete folders.

A silent Hub has to make `create_repo_with_retries`, `push_folder_to_hub` and the publish CLI fail within a bounded
time (a few read timeouts), after retrying (each attempt is a new connection the silent socket counts), with an
error that says what failed, after how many attempts and how long, that the local folder is intact and how to retry.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import _http as hf_http
from safetensors.torch import save_file

from hub_server import FullServer, SilentServer
from diffusers_simple_training.hub import (
    HubRetriesExhaustedError,
    create_repo_with_retries,
    hub_timeouts,
    push_folder_to_hub,
)
from diffusers_simple_training.publish import check_pipeline_folder, check_safetensors_file
from diffusers_simple_training.publish import main as publish_main


ROOT = Path(__file__).resolve().parents[1]
FAST = dict(connect_timeout=0.5, read_timeout=0.5, backoff_seconds=0.05)  # ~0.5 s per silent attempt


def folder_contents(folder) -> dict[str, bytes]:
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_pipeline_folder(folder, seed=0) -> Path:
    """A small folder that passes `check_pipeline_folder`: a Diffusers DDPM pipeline layout with safetensors weights."""
    folder = Path(folder)
    (folder / "unet").mkdir(parents=True)
    (folder / "scheduler").mkdir()
    generator = torch.Generator().manual_seed(seed)
    tensors = {"conv.weight": torch.randn(16, 8, 3, 3, generator=generator), "conv.bias": torch.zeros(16)}
    save_file(tensors, folder / "unet" / "diffusion_pytorch_model.safetensors")
    (folder / "unet" / "config.json").write_text('{"_class_name": "UNet2DModel", "sample_size": 8}\n')
    (folder / "scheduler" / "scheduler_config.json").write_text('{"_class_name": "DDPMScheduler"}\n')
    (folder / "model_index.json").write_text(
        '{"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", "DDPMScheduler"]}\n'
    )
    (folder / "README.md").write_text("---\nlibrary_name: diffusers\n---\n# A test pipeline\n")
    return folder


def statuses(hub_server, since, method, fragment):
    return [r.status for r in hub_server.requests[since:] if r.method == method and fragment in r.path]


@pytest.fixture
def silent_hub():
    with SilentServer() as server:
        yield server


# ----- timeouts: a Hub that never answers -----


@pytest.mark.timeout(60)
def test_create_repo_with_retries_gives_up_on_a_silent_hub(silent_hub):
    start = time.monotonic()
    with pytest.raises(HubRetriesExhaustedError) as error:
        create_repo_with_retries("someuser/never", endpoint=silent_hub.url, retries=3, **FAST)
    elapsed = time.monotonic() - start
    assert silent_hub.connections == 3  # one connection per attempt: the retries happened
    assert error.value.attempts == 3 and 1.5 <= error.value.elapsed <= elapsed < 15
    message = str(error.value)
    assert "Creating the Hub repo 'someuser/never'" in message and silent_hub.url in message
    assert "failed after 3 attempts over" in message and "read timeout 0.5 s" in message
    assert "ReadTimeout (no answer within the timeout)" in message
    assert "\n" not in message
    # the waits between attempts grow: 0.05 s, then 0.1 s, after a 0.5 s read timeout each
    gaps = [b - a for a, b in zip(silent_hub.accept_times, silent_hub.accept_times[1:])]
    assert all(0.5 <= gap < 5 for gap in gaps)


@pytest.mark.timeout(60)
def test_push_folder_to_hub_gives_up_on_a_silent_hub(silent_hub, tmp_path):
    folder = write_pipeline_folder(tmp_path / "my model")
    local = folder_contents(folder)
    start = time.monotonic()
    with pytest.raises(RuntimeError) as error:
        push_folder_to_hub(folder, "someuser/never", retries=2, endpoint=silent_hub.url, **FAST)
    assert time.monotonic() - start < 15
    assert silent_hub.connections == 2
    message = str(error.value)
    assert f"Pushing {str(folder)!r} to the Hub repo 'someuser/never'" in message
    assert "failed after 2 attempts over" in message
    assert "The local folder is unchanged" in message
    assert f"diffusers-simple-publish '{folder}' --hub_model_id someuser/never" in message
    assert folder_contents(folder) == local


@pytest.mark.timeout(60)
def test_connect_timeout_fires():
    with FullServer() as full:
        start = time.monotonic()
        with pytest.raises(HubRetriesExhaustedError, match=r"after 2 attempts.*ConnectTimeout \(no connection") as error:
            create_repo_with_retries(
                "someuser/never", endpoint=full.url, retries=2, connect_timeout=0.5, read_timeout=30, backoff_seconds=0
            )
    assert time.monotonic() - start < 10
    assert "connect timeout 0.5 s, read timeout 30 s" in str(error.value)


@pytest.mark.timeout(60)
def test_timeouts_from_the_environment(silent_hub, monkeypatch):
    monkeypatch.setenv("DIFFUSERS_SIMPLE_HUB_CONNECT_TIMEOUT", "0.5")
    monkeypatch.setenv("DIFFUSERS_SIMPLE_HUB_READ_TIMEOUT", "0.4")
    with pytest.raises(HubRetriesExhaustedError, match=r"after 1 attempt over .*read timeout 0\.4 s"):
        create_repo_with_retries("someuser/never", endpoint=silent_hub.url, retries=1)
    monkeypatch.setenv("DIFFUSERS_SIMPLE_HUB_READ_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="DIFFUSERS_SIMPLE_HUB_READ_TIMEOUT"):
        create_repo_with_retries("someuser/never", endpoint=silent_hub.url, retries=1)


def test_hub_timeouts_uses_the_library_client_factory_and_restores_it():
    before = hf_http._GLOBAL_CLIENT_FACTORY
    assert huggingface_hub.get_session().timeout.read is None  # the library's default: wait forever
    with hub_timeouts(connect_timeout=3, read_timeout=7):
        timeout = huggingface_hub.get_session().timeout
        assert (timeout.connect, timeout.read, timeout.write) == (3, 7, 7)
        hf_http.close_session()  # the library closes its client after a connection error; the new one has them too
        assert huggingface_hub.get_session().timeout.read == 7
    assert hf_http._GLOBAL_CLIENT_FACTORY is before
    assert huggingface_hub.get_session().timeout.read is None
    with pytest.raises(ValueError, match="read_timeout"):
        with hub_timeouts(read_timeout=0):
            pass


def test_bad_retry_arguments(tmp_path):
    with pytest.raises(ValueError, match="positive integer"):
        create_repo_with_retries("someuser/x", retries=0)
    with pytest.raises(ValueError, match="backoff_seconds"):
        push_folder_to_hub(tmp_path, "someuser/x", backoff_seconds=-1)
    with pytest.raises(ValueError, match="connect_timeout"):
        push_folder_to_hub(tmp_path, "someuser/x", connect_timeout=-1)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_publish_cli_fails_in_bounded_time_on_a_silent_hub(silent_hub, tmp_path):
    folder = write_pipeline_folder(tmp_path / "output")
    local = folder_contents(folder)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "diffusers_simple_training.publish", str(folder), "--hub_model_id", "someuser/never",
         "--retries", "3", "--connect_timeout", "1", "--read_timeout", "1", "--backoff_seconds", "0.1"],
        cwd=tmp_path, env={**os.environ, "HF_ENDPOINT": silent_hub.url}, capture_output=True, text=True, timeout=100,
    )
    elapsed = time.monotonic() - start
    assert result.returncode == 1, result.stderr[-3000:]
    assert silent_hub.connections == 3
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("diffusers-simple-publish: error: Pushing ")
    assert "failed after 3 attempts over" in last_line and "The local folder is unchanged" in last_line
    assert f"diffusers-simple-publish {folder} --hub_model_id someuser/never" in last_line
    assert "attempt 1/3" in result.stderr and "attempt 2/3" in result.stderr  # the retries are logged as they go
    assert folder_contents(folder) == local
    print(f"publish against a silent Hub failed after {elapsed:.1f} s (3 attempts, 1 s timeouts, with start-up)")


# ----- retries: a Hub that answers 429 / 5xx, or stalls, then succeeds -----


def test_create_repo_with_retries_after_rate_limits_and_server_errors(hub_server):
    first = len(hub_server.requests)
    hub_server.inject("POST", "/api/repos/create", [429, 503], headers={"Retry-After": "0"})
    assert create_repo_with_retries("someuser/rate-limited", retries=3, **FAST) == "someuser/rate-limited"
    assert statuses(hub_server, first, "POST", "/api/repos/create") == [429, 503, 200]
    # an existing repo is found, not an error; its visibility stays
    hub_server.create_repo("someuser/existing", private=True)
    assert create_repo_with_retries("someuser/existing", private=False, **FAST) == "someuser/existing"
    assert hub_server.repo("someuser/existing").private


def test_retry_after_is_honoured(hub_server):
    first = len(hub_server.requests)
    hub_server.inject("POST", "/api/repos/create", [429], headers={"Retry-After": "1"})
    start = time.monotonic()
    create_repo_with_retries("someuser/retry-after", retries=2, connect_timeout=2, read_timeout=5, backoff_seconds=0)
    assert time.monotonic() - start >= 1
    assert statuses(hub_server, first, "POST", "/api/repos/create") == [429, 200]


def test_errors_a_retry_cannot_fix_are_raised_at_once(hub_server):
    first = len(hub_server.requests)
    hub_server.inject("POST", "/api/repos/create", [403])
    with pytest.raises(HfHubHTTPError) as error:
        create_repo_with_retries("someuser/forbidden", retries=3, **FAST)
    assert error.value.response.status_code == 403
    assert statuses(hub_server, first, "POST", "/api/repos/create") == [403]


@pytest.mark.timeout(60)
def test_push_retries_a_stalled_commit_and_server_errors_then_succeeds(hub_server, tmp_path):
    folder, repo_id = write_pipeline_folder(tmp_path / "model"), "someuser/stalled-push"
    local = folder_contents(folder)
    first = len(hub_server.requests)
    hub_server.inject("POST", "/api/repos/create", [502])
    hub_server.inject("POST", f"/api/models/{repo_id}/commit/main", [None, 500])  # no answer at all, then a 500
    commit_url = push_folder_to_hub(folder, repo_id, retries=4, **FAST)
    assert statuses(hub_server, first, "POST", "/api/repos/create")[0] == 502
    assert statuses(hub_server, first, "POST", "/commit/") == [0, 500, 200]  # 0: the stall, which timed out
    assert commit_url.endswith(f"/commit/{hub_server.repo(repo_id).main}")
    _, files = hub_server.repo(repo_id).snapshot("main")
    assert {p: d for p, d in files.items() if p != ".gitattributes"} == local
    assert folder_contents(folder) == local


# ----- the publish pre-check -----


def test_a_complete_folder_passes(tmp_path):
    check_pipeline_folder(write_pipeline_folder(tmp_path / "ok"))


def test_truncated_weights_are_refused(tmp_path):
    folder = write_pipeline_folder(tmp_path / "pipeline")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-10])
    with pytest.raises(ValueError, match=r"diffusion_pytorch_model\.safetensors is truncated \(\d+ bytes, but its header's data offsets need exactly \d+\)"):
        check_pipeline_folder(folder)
    weights.write_bytes(data[:100])  # cut inside the header
    with pytest.raises(ValueError, match=r"safetensors is truncated \(100 bytes, but its header alone claims \d+\)"):
        check_pipeline_folder(folder)
    weights.write_bytes(data[:3])
    with pytest.raises(ValueError, match=r"safetensors is truncated \(3 bytes"):
        check_pipeline_folder(folder)
    weights.write_bytes(data + b"\0" * 7)
    with pytest.raises(ValueError, match=r"safetensors has trailing bytes"):
        check_pipeline_folder(folder)
    weights.write_bytes(b"\x10" + b"\0" * 7 + b"not json at all!" + data[24:])
    with pytest.raises(ValueError, match=r"safetensors has an unreadable header"):
        check_pipeline_folder(folder)
    weights.write_bytes(b"")
    assert "truncated (0 bytes" in check_safetensors_file(weights)


def test_missing_weights_and_pickle_weights_are_refused(tmp_path):
    folder = write_pipeline_folder(tmp_path / "pipeline")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    with pytest.raises(ValueError, match=r"unet/diffusion_pytorch_model\.safetensors \(the weights\) is missing"):
        check_pipeline_folder(folder)
    torch.save({"conv.weight": torch.zeros(1)}, folder / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match=r"only pickle weights \(unet/diffusion_pytorch_model\.bin\) are there, and only safetensors"):
        check_pipeline_folder(folder)


def test_every_problem_is_named_at_once(tmp_path):
    folder = write_pipeline_folder(tmp_path / "pipeline")
    (folder / "unet" / "config.json").unlink()
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1])
    (folder / "scheduler" / "scheduler_config.json").write_text('{"_class_name": ')
    index = json.loads((folder / "model_index.json").read_text())
    index |= {"_class_name": ["pipeline_simple", "SimpleDiffusionPipeline"], "unet": ["unet_simple", "SimpleUNet"]}
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "README.md").unlink()
    with pytest.raises(ValueError) as error:
        check_pipeline_folder(folder)
    message = str(error.value)
    for problem in (
        "README.md is missing",
        "unet/config.json is missing",
        "unet/diffusion_pytorch_model.safetensors is truncated",
        "scheduler/scheduler_config.json is not valid JSON",
        "pipeline_simple.py (the code of SimpleDiffusionPipeline, named in model_index.json) is missing",
        "unet/unet_simple.py (the code of SimpleUNet, named in model_index.json) is missing",
    ):
        assert problem in message
    (folder / "model_index.json").write_text("{")
    with pytest.raises(ValueError, match=r"model_index\.json is not valid JSON"):
        check_pipeline_folder(folder)


def test_publish_cli_refuses_an_incomplete_folder_before_any_hub_request(hub_server, tmp_path):
    folder = write_pipeline_folder(tmp_path / "pipeline")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    first = len(hub_server.requests)
    with pytest.raises(SystemExit) as exit_info:
        publish_main([str(folder), "--hub_model_id", "someuser/incomplete"])
    assert str(exit_info.value.code).startswith("diffusers-simple-publish: error: ")
    assert "safetensors is truncated" in str(exit_info.value.code)
    assert hub_server.requests[first:] == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_training_push_to_hub_fails_at_startup_on_a_silent_hub(silent_hub, tmp_path):
    """`--push_to_hub` creates the repo before training (`create_repo_with_retries`): against a silent Hub the run
    stops there after the retries, in bounded time, with the timeouts from the environment."""
    env = {**os.environ, "HF_ENDPOINT": silent_hub.url, "OMP_NUM_THREADS": "1",
           "DIFFUSERS_SIMPLE_HUB_CONNECT_TIMEOUT": "1", "DIFFUSERS_SIMPLE_HUB_READ_TIMEOUT": "1"}
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "diffusers_simple_training.train", "--output_dir", str(tmp_path / "run"),
         "--resolution", "8", "--max_train_steps", "2", "--train_batch_size", "8", "--lr_warmup_steps", "0",
         "--block_out_channels", "16", "32", "--layers_per_block", "1", "--attention_levels", "false", "true",
         "--attention_head_dim", "16", "--norm_num_groups", "8", "--ddpm_num_steps", "100",
         "--push_to_hub", "--hub_model_id", "someuser/never"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280,
    )
    elapsed = time.monotonic() - start
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Creating the Hub repo 'someuser/never'" in result.stderr and "failed after 3 attempts over" in result.stderr, result.stderr[-4000:]
    assert silent_hub.connections == 3
    print(f"training with --push_to_hub against a silent Hub stopped after {elapsed:.1f} s")
