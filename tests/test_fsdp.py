"""train.py under FSDP2 (Accelerate's FSDP path, `fully_shard`) with two gloo processes on the CPU: the same losses and
weights as DDP, sharded checkpoints, exact resume, and an export of the full weights that loads anywhere."""

import os
import shutil

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from test_training import REPO, assert_same_weights, finish_training, launch_training


FSDP_CONFIG = os.path.join(REPO, "training", "configs", "accelerate_fsdp2.yaml")
# validation mid-run: gathering the shards and sampling must not change the course of training
ARGS = "--label_column label --use_ema --max_train_steps 4 --checkpointing_steps 2 --validation_steps 2".split()
ARGS += "--train_batch_size 8 --gradient_accumulation_steps 2".split()
LEARNING_RATE = 1e-4  # train.py's default
EMA_UNET = os.path.join("unet", "diffusion_pytorch_model.safetensors")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 4-step run under DDP and under FSDP2, two processes each (run side by side)."""
    root = tmp_path_factory.mktemp("fsdp")
    ddp = launch_training(ARGS, root / "ddp", processes=2)
    fsdp = launch_training(ARGS, root / "fsdp", processes=2, config_file=FSDP_CONFIG)
    try:
        finish_training(ddp)
    finally:
        finish_training(fsdp)
    return root


def logged_losses(output_dir) -> list[float]:
    events = EventAccumulator(str(output_dir / "logs" / "train_simple"))
    events.Reload()
    return [event.value for event in events.Scalars("loss")]


@pytest.mark.slow
def test_fsdp_trains_like_ddp(runs):
    # The runs differ only in how the gradients are summed across processes (all-reduce vs reduce-scatter): float32
    # rounding, ~1e-7 relative. Adam moves a weight by at most a few learning rates per step whatever its gradient,
    # so that bounds how far rounding can take the two runs apart; a wrong shard or initial weight is off by ~1.
    ddp, fsdp = logged_losses(runs / "ddp"), logged_losses(runs / "fsdp")
    assert len(ddp) == len(fsdp) == 4
    np.testing.assert_allclose(fsdp, ddp, rtol=1e-4)
    a, b = load_file(runs / "ddp" / EMA_UNET), load_file(runs / "fsdp" / EMA_UNET)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=4 * LEARNING_RATE * 4, msg=name)


@pytest.mark.slow
def test_fsdp_checkpoints_are_sharded_and_the_export_is_whole(runs):
    checkpoint = runs / "fsdp" / "checkpoint-2"
    assert sorted(os.listdir(checkpoint / "pytorch_model_fsdp_0")) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert (checkpoint / "optimizer_0").is_dir() and not (checkpoint / "model.safetensors").exists()
    assert (checkpoint / "ema" / "diffusion_pytorch_model.safetensors").is_file()  # the full EMA weights
    assert "on 2 process(es)" in (runs / "fsdp" / "README.md").read_text()

    pipeline = DiffusionPipeline.from_pretrained(str(runs / "fsdp"), trust_remote_code=True)
    expected = load_file(runs / "fsdp" / EMA_UNET)
    assert {name: p.shape for name, p in pipeline.unet.state_dict().items()} == {n: t.shape for n, t in expected.items()}
    image = pipeline(batch_size=1, num_inference_steps=2, class_labels=[1], output_type="np").images
    assert image.shape == (1, 8, 8, 1) and np.isfinite(image).all()


@pytest.mark.slow
def test_fsdp_resume_is_exact(runs, tmp_path):
    shutil.copytree(runs / "fsdp" / "checkpoint-2", tmp_path / "checkpoint-2")
    resumed = launch_training([*ARGS, "--resume_from_checkpoint", "latest"], tmp_path, 2, config_file=FSDP_CONFIG)
    output = finish_training(resumed)
    assert f"Resumed from {tmp_path / 'checkpoint-2'} at step 2" in output
    assert_same_weights(load_file(runs / "fsdp" / EMA_UNET), load_file(tmp_path / EMA_UNET))
    for shard in ("__0_0.distcp", "__1_0.distcp"):  # every process's shard of the training weights
        uninterrupted = (runs / "fsdp" / "checkpoint-4" / "pytorch_model_fsdp_0" / shard).read_bytes()
        assert (tmp_path / "checkpoint-4" / "pytorch_model_fsdp_0" / shard).read_bytes() == uninterrupted
