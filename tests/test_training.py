"""The training script: arguments, preprocessing, data order, objective, checkpoints, model card, and end-to-end runs
(digits, image folder, streaming, fine-tuning, SIGKILL + resume, NaN stop, two gloo processes) on tiny models."""

import glob
import importlib.util
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import datasets
import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from diffusers import DDPMScheduler, DiffusionPipeline
from diffusers.training_utils import compute_snr
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file

from diffusers_simple import SimpleScheduler, SimpleUNetOutput
from diffusers_simple_training import train
from diffusers_simple_training.args import parse_args
from diffusers_simple_training.atomic import replace_path
from diffusers_simple_training.checkpointing import list_checkpoints, resolve_checkpoint, write_manifest
from diffusers_simple_training.data import (
    EpochSampler,
    ExampleProcessor,
    ImageTransform,
    TrainBatches,
    TrainingData,
    collate,
    image_channels,
)
from diffusers_simple_training.model_card import add_eval_results_to_card, render_model_card
from diffusers_simple_training.objective import diffusion_loss, min_snr_weights, training_target


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_SCRIPT = os.path.join(REPO, "training", "train.py")
ACCELERATE = os.path.join(os.path.dirname(sys.executable), "accelerate")
TINY_UNET = "--block_out_channels 16 32 --layers_per_block 1 --attention_levels false true --attention_head_dim 16"
TINY_UNET += " --norm_num_groups 8"
TINY_RUN = "--resolution 8 --ddpm_num_steps 100 --ddpm_num_inference_steps 2 --eval_batch_size 4"
TINY_RUN += " --train_batch_size 16 --lr_warmup_steps 0 --seed 0"


def run_training(output_dir, *args, unet_flags=TINY_UNET):
    """Runs `training/train.py` with a tiny model in this process, then resets Accelerate's process-wide state."""
    try:
        train.main([*TINY_RUN.split(), *unet_flags.split(), "--output_dir", str(output_dir), *map(str, args)])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def weights(path):
    return load_file(os.path.join(path, "model.safetensors") if os.path.isdir(path) else path)


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def make_image_folder(root, sizes_and_modes):
    """An imagefolder dataset: class sub-folders `a/` and `b/` of random images."""
    rng = np.random.default_rng(0)
    for i, (size, mode) in enumerate(sizes_and_modes):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
        pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
        Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=None).save(folder / f"{i}.png")
    return root


# --- arguments -------------------------------------------------------------------------------------------------------


def test_config_file_is_overridden_by_the_command_line(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "resolution: 16\nuse_ema: true\nblock_out_channels: [8, 16]\nlearning_rate: 3.0e-4\nlabel_column: label\n"
    )
    args = parse_args(["--config", str(config), "--resolution", "32"])
    assert (args.resolution, args.use_ema, args.block_out_channels, args.learning_rate) == (32, True, [8, 16], 3e-4)
    assert args.label_column == "label" and args.train_batch_size == 16  # a default of train_unconditional.py

    json_config = tmp_path / "config.json"
    json_config.write_text(json.dumps({"attention_levels": [False, True], "prediction_type": "v_prediction"}))
    args = parse_args(["--config", str(json_config)])
    assert args.attention_levels == [False, True] and args.prediction_type == "v_prediction"


def test_config_file_errors(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("resolutoin: 16\n")
    with pytest.raises(ValueError, match=r"unknown arguments \['resolutoin'\]"):
        parse_args(["--config", str(config)])
    config.write_text("prediction_type: noise\n")  # checked by argparse like a command-line value
    with pytest.raises(SystemExit):
        parse_args(["--config", str(config)])
    with pytest.raises(ValueError, match="is not a file"):
        parse_args(["--config", str(tmp_path / "missing.yaml")])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset_name", "x", "--train_data_dir", "y"], "either --dataset_name or --train_data_dir"),
        (["--streaming"], "--streaming needs --max_train_steps"),
        (["--class_dropout_prob", "0.1"], "needs --label_column"),
        (["--resolution", "0"], "--resolution must be a positive integer"),
        (["--class_dropout_prob", "1.5", "--label_column", "label"], r"must be in \[0, 1\)"),
        (["--push_every_save"], "needs --push_to_hub"),
        (["--calibrate_budgets", "5", "0"], "--calibrate_budgets must be positive"),
        (["--calibrate_budgets", "5", "--sampler", "ddpm"], "needs an ODE sampler"),
    ],
)
def test_bad_argument_combinations(argv, message):
    with pytest.raises(ValueError, match=message):
        parse_args(argv)


def test_bad_choice_is_refused():
    with pytest.raises(SystemExit):
        parse_args(["--lr_scheduler", "exponential"])


# --- preprocessing ---------------------------------------------------------------------------------------------------


def test_channels_come_from_the_data():
    assert image_channels(Image.new("L", (4, 4))) == 1
    assert image_channels(Image.new("LA", (4, 4))) == 1
    assert image_channels(Image.new("I;16", (4, 4))) == 1
    assert image_channels(Image.new("RGB", (4, 4))) == 3
    assert image_channels(Image.new("RGBA", (4, 4))) == 3  # alpha only with --num_channels 4
    assert image_channels(Image.new("P", (4, 4))) == 3

    rng = np.random.default_rng(0)
    gray = ImageTransform(resolution=4, num_channels=1)(Image.new("RGB", (4, 4), (255, 255, 255)), rng)
    assert gray.shape == (1, 4, 4) and gray.dtype == np.float32 and np.all(gray == 1.0)
    rgb = ImageTransform(resolution=4, num_channels=3)(Image.new("L", (4, 4), 0), rng)
    assert rgb.shape == (3, 4, 4) and np.all(rgb == -1.0)
    sixteen_bit = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert np.all(ImageTransform(resolution=4, num_channels=1)(sixteen_bit, rng) == 1.0)  # scaled, not clipped


def test_resize_and_center_crop():
    # A 32x16 image whose pixel value is its column index * 8: the shorter side is already 16; the crop keeps
    # columns 8..23
    columns = np.tile(np.arange(32, dtype=np.uint8) * 8, (16, 1))
    out = ImageTransform(resolution=16, num_channels=1, center_crop=True)(
        Image.fromarray(columns), np.random.default_rng(0)
    )
    np.testing.assert_array_equal(out[0, 0], np.arange(8, 24, dtype=np.float32) * 8 / np.float32(127.5) - 1)
    # a 4x8 image is upscaled to 16x32 (shorter side 16) before the crop
    small = ImageTransform(resolution=16, num_channels=3, center_crop=True)(
        Image.new("RGB", (4, 8)), np.random.default_rng(0)
    )
    assert small.shape == (3, 16, 16)


def test_pad_to_resolution_frames_small_images_and_resizes_large_ones():
    # a 28x28 image in a 32x32 frame: every pixel kept at its value, a 2-pixel black border around it
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    out = ImageTransform(resolution=32, num_channels=1, pad_to_resolution=True)(Image.fromarray(pixels), np.random.default_rng(0))
    assert out.shape == (1, 32, 32)
    np.testing.assert_array_equal(out[0, 2:30, 2:30], pixels.astype(np.float32) / np.float32(127.5) - 1)
    border = np.ones((32, 32), dtype=bool)
    border[2:30, 2:30] = False
    assert np.all(out[0][border] == -1.0)
    # an odd margin (5x7 in 8x8) and RGB; an image larger than the resolution is resized as without padding
    rgb = ImageTransform(resolution=8, num_channels=3, pad_to_resolution=True)(Image.new("RGB", (5, 7), (255, 0, 0)), np.random.default_rng(0))
    assert rgb.shape == (3, 8, 8) and rgb[0, 0:7, 1:6].min() == 1.0 and rgb[0, :, 0].max() == -1.0 and rgb[0, 7].max() == -1.0
    large = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40), dtype=np.uint8))
    padded = ImageTransform(resolution=32, num_channels=1, center_crop=True, pad_to_resolution=True)(large, np.random.default_rng(0))
    resized = ImageTransform(resolution=32, num_channels=1, center_crop=True)(large, np.random.default_rng(0))
    np.testing.assert_array_equal(padded, resized)


def test_random_crop_and_flip_are_functions_of_the_generator():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 40), dtype=np.uint8))
    transform = ImageTransform(resolution=16, num_channels=1, random_flip=True)
    outputs = [transform(image, np.random.default_rng((0, epoch, 7))) for epoch in range(12)]
    again = [transform(image, np.random.default_rng((0, epoch, 7))) for epoch in range(12)]
    for a, b in zip(outputs, again):
        np.testing.assert_array_equal(a, b)
    assert len({o.tobytes() for o in outputs}) > 3  # crops and flips vary with the seed
    # each output is a crop of the image or of its mirror image
    resized = np.asarray(image.resize((27, 16), Image.BILINEAR), dtype=np.float32) / 127.5 - 1
    flipped = 0
    for out in outputs:
        crops = [resized[:, x : x + 16] for x in range(27 - 16 + 1)]
        if any(np.array_equal(out[0], c) for c in crops):
            continue
        assert any(np.array_equal(out[0][:, ::-1], c) for c in crops)
        flipped += 1
    assert 0 < flipped < len(outputs)


@pytest.mark.parametrize("streaming", [False, True])
def test_batches_with_worker_processes_equal_the_main_process_ones_and_resume_exactly(streaming):
    # --dataloader_num_workers > 0: a map-style dataset gives the same batches (random crops and flips included) as
    # without workers, and an epoch restarted after k batches (a resume) continues with exactly the uninterrupted
    # epoch's batch k + 1, ...
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (10, 12), dtype=np.uint8)) for _ in range(23)]
    dataset = datasets.Dataset.from_dict({"image": images, "label": list(range(23))}).cast_column("label", datasets.ClassLabel(num_classes=23))
    if streaming:
        dataset = dataset.to_iterable_dataset(num_shards=2)  # a worker per shard
    data = TrainingData(dataset, "image", "label", 23, 1, "test", None)
    processor = ExampleProcessor(ImageTransform(8, 1, random_flip=True), "image", "label", 23)

    def batches(num_workers, epoch, skip=0):
        loader = TrainBatches(data, processor, batch_size=4, seed=3, num_workers=num_workers)
        return [(b["pixel_values"], b["class_labels"]) for b in loader.epoch(epoch, skip)]

    for epoch in (0, 1):
        # a stream is split into shards among the workers, so its order depends on their number (as in `datasets`);
        # for a given number, resuming is exact
        uninterrupted = batches(2 if streaming else 0, epoch)
        assert len(uninterrupted) == 6
        for got in (batches(2, epoch), batches(2, epoch, skip=2)):
            expected = uninterrupted[len(uninterrupted) - len(got):]
            assert len(got) == len(expected) > 0
            for (pixels, labels), (pixels_0, labels_0) in zip(got, expected):
                torch.testing.assert_close(pixels, pixels_0, rtol=0, atol=0)
                torch.testing.assert_close(labels, labels_0, rtol=0, atol=0)
        assert not torch.equal(batches(0, 0)[0][1], batches(0, 1)[0][1])  # each epoch its own order


def test_undecodable_images_raise_or_are_skipped():
    broken = {"image": {"bytes": b"not an image", "path": None}, "label": 1}
    transform = ImageTransform(resolution=4, num_channels=1)
    with pytest.raises(ValueError, match=r"Could not decode the image of example 3 .*--decode_errors skip"):
        ExampleProcessor(transform, "image", "label", 2)(broken, np.random.default_rng(0), "example 3")
    skipping = ExampleProcessor(transform, "image", "label", 2, skip_decode_errors=True)
    good_bytes = io.BytesIO()
    Image.new("L", (4, 4), 255).save(good_bytes, format="PNG")
    good = {"image": {"bytes": good_bytes.getvalue(), "path": None}, "label": 0}
    batch = collate([skipping(row, np.random.default_rng(0), "x") for row in (good, broken)])
    assert batch["valid"].tolist() == [True, False]
    assert batch["pixel_values"].shape == (2, 1, 4, 4) and batch["class_labels"].tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        skipping({**good, "label": 2}, np.random.default_rng(0), "example 0")


def test_epoch_order_depends_on_seed_and_epoch_only():
    def epoch(seed, epoch, rank=0, replicas=1, start=0):
        sampler = EpochSampler(10, seed, num_replicas=replicas, rank=rank)
        sampler.set_epoch(epoch, start)
        return [index for _, index in sampler]

    assert epoch(0, 0) == epoch(0, 0) and sorted(epoch(0, 0)) == list(range(10))
    assert epoch(0, 0) != epoch(0, 1) and epoch(0, 0) != epoch(1, 0)
    assert epoch(0, 3, start=4) == epoch(0, 3)[4:]
    shares = [epoch(0, 2, rank, replicas=3) for rank in range(3)]
    assert [len(s) for s in shares] == [4, 4, 4]  # 10 padded to 12 by wrapping around
    assert set(sum(shares, [])) == set(range(10))


# --- objective -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_min_snr_weights_match_diffusers(prediction_type):
    scheduler = SimpleScheduler(prediction_type=prediction_type)
    reference = DDPMScheduler(prediction_type=prediction_type)
    timesteps = torch.tensor([0, 10, 100, 300, 500, 999])
    snr = compute_snr(reference, timesteps)
    gamma = 5.0
    # train_text_to_image.py: min(SNR, gamma) / SNR for epsilon, / (SNR + 1) for v; Hang et al.: min(SNR, gamma)
    # for x_0
    expected = torch.minimum(snr, torch.full_like(snr, gamma))
    if prediction_type == "epsilon":
        expected = expected / snr
    elif prediction_type == "v_prediction":
        expected = expected / (snr + 1)
    torch.testing.assert_close(min_snr_weights(scheduler, timesteps, gamma), expected, rtol=1e-5, atol=0)


def test_min_snr_weights_at_zero_terminal_snr():
    # Zero terminal SNR needs v- or x0-prediction (SimpleScheduler refuses it with epsilon): weights stay finite there,
    # min(SNR, gamma) / (SNR + 1) = 0 for v at SNR = 0, as in Diffusers' train_text_to_image.py.
    scheduler = SimpleScheduler(rescale_betas_zero_snr=True, prediction_type="v_prediction")
    weights = min_snr_weights(scheduler, torch.tensor([999, 0]), 5.0)
    assert weights[0].item() == 0.0 and torch.isfinite(weights).all()


def test_training_targets_match_diffusers():
    clean, noise, timesteps = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4), torch.tensor([1, 500, 999])
    v = training_target(SimpleScheduler(prediction_type="v_prediction"), clean, noise, timesteps)
    torch.testing.assert_close(v, DDPMScheduler(prediction_type="v_prediction").get_velocity(clean, noise, timesteps))
    assert training_target(SimpleScheduler(), clean, noise, timesteps) is noise
    assert training_target(SimpleScheduler(prediction_type="sample"), clean, noise, timesteps) is clean


class ZeroModel(torch.nn.Module):
    """Predicts 0 and records its inputs."""

    def forward(self, sample, timestep, class_labels=None):
        self.inputs = (sample, timestep, class_labels)
        return SimpleUNetOutput(sample=torch.zeros_like(sample))


def test_diffusion_loss_masks_images_and_drops_labels():
    scheduler, model = SimpleScheduler(prediction_type="sample"), ZeroModel()
    clean = torch.stack([torch.full((1, 4, 4), 0.5), torch.full((1, 4, 4), 100.0)])
    labels = torch.tensor([3, 4])
    # x_0-prediction by a model that predicts 0: the loss is the mean of x_0^2 over the images that count
    loss = diffusion_loss(model, scheduler, clean, labels, valid=torch.tensor([True, False]), null_class=10)
    assert loss.item() == 0.25 and model.inputs[2].tolist() == [3, 4]
    assert diffusion_loss(model, scheduler, clean, labels, valid=torch.tensor([False, False])).item() == 0.0
    diffusion_loss(model, scheduler, clean, labels, class_dropout_prob=1.0, null_class=10)
    assert model.inputs[2].tolist() == [10, 10]  # the null class
    # the model sees x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps in float32, the timesteps in [0, T)
    torch.manual_seed(0)
    diffusion_loss(model, scheduler, clean)
    torch.manual_seed(0)
    noise, timesteps = torch.randn_like(clean), torch.randint(0, 1000, (2,))
    assert model.inputs[0].dtype == torch.float32 and torch.equal(model.inputs[1], timesteps)
    torch.testing.assert_close(model.inputs[0], DDPMScheduler().add_noise(clean, noise, timesteps))


# --- checkpoints -----------------------------------------------------------------------------------------------------


def fake_checkpoint(folder, step, line=None, ancestors=(), files=("model.safetensors",)):
    """A checkpoint folder with a trainer state, RNG states, the given files and a manifest (written last)."""
    folder.mkdir(parents=True)
    state = {"global_step": step, "epoch": 0, "batches_in_epoch": step, "seed": 0, "num_processes": 1}
    state.update(line=line, ancestors=[list(a) for a in ancestors], parent=None)
    (folder / "trainer_state.json").write_text(json.dumps(state))
    for name in ("random_states_0.pkl", *files):
        (folder / name).write_bytes(name.encode() * 10)
    write_manifest(str(folder))
    return folder


def test_latest_ignores_temporary_and_incomplete_checkpoints(tmp_path):
    for step in (5, 20):
        fake_checkpoint(tmp_path / f"checkpoint-{step}", step)
    fake_checkpoint(tmp_path / "checkpoint-30.tmp", 30)
    (tmp_path / "checkpoint-7.old.tmp").mkdir()
    (tmp_path / "checkpoint-40").mkdir()  # no manifest: not a (complete) checkpoint
    (tmp_path / "checkpoint-40" / "trainer_state.json").write_text("{}")
    assert [step for step, _ in list_checkpoints(tmp_path)] == [5, 20]
    assert resolve_checkpoint("latest", str(tmp_path)) == str(tmp_path / "checkpoint-20")
    assert resolve_checkpoint("latest", str(tmp_path / "empty")) is None  # a new run
    assert resolve_checkpoint(None, str(tmp_path)) is None
    with pytest.raises(ValueError, match="checkpoint-40 is incomplete: it has no manifest.json"):
        resolve_checkpoint(str(tmp_path / "checkpoint-40"), str(tmp_path))
    with pytest.raises(ValueError, match="is not a checkpoint folder"):
        resolve_checkpoint(str(tmp_path / "checkpoint-7.old.tmp"), str(tmp_path))


def test_replace_path_swaps_folders_and_files(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a.txt").write_text("new")
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "old.txt").write_text("old")
    replace_path(str(tmp_path / "new"), str(tmp_path / "target"))
    assert sorted(os.listdir(tmp_path)) == ["target"] and os.listdir(tmp_path / "target") == ["a.txt"]
    (tmp_path / "f.tmp").write_text("2")
    (tmp_path / "f").write_text("1")
    replace_path(str(tmp_path / "f.tmp"), str(tmp_path / "f"))
    assert (tmp_path / "f").read_text() == "2" and not (tmp_path / "f.tmp").exists()


# --- model card ------------------------------------------------------------------------------------------------------


def render_pets_card(output_dir):
    """The card of a tiny class-conditional RGB model trained on `someuser/pets`, with `output_dir` as the run's."""
    from diffusers_simple import SimpleUNet
    from diffusers_simple_training.data import TrainingData

    args = parse_args(
        ["--output_dir", str(output_dir), "--dataset_name", "someuser/pets", "--label_column", "label", "--use_ema"]
    )
    unet = SimpleUNet(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_levels=(False, True),
        attention_head_dim=16,
        norm_num_groups=8,
        num_class_embeds=2,
    )
    dataset = datasets.Dataset.from_dict(
        {"label": [0, 1]}, features=datasets.Features({"label": datasets.ClassLabel(names=["cat", "dog"])})
    )
    data = TrainingData(
        dataset,
        "image",
        "label",
        2,
        3,
        "[someuser/pets](https://huggingface.co/datasets/someuser/pets)",
        "someuser/pets",
    )
    return render_model_card(
        args,
        repo_id="someuser/pets-ddpm",
        unet=unet,
        scheduler=SimpleScheduler(),
        data=data,
        grid_file="samples.png",
        grid_caption="Samples.",
        global_step=7,
        epochs=1.5,
        final_loss=0.1234,
        loss_window=7,
        num_processes=2,
        max_train_steps=7,
        seed=3,
        base_model=None,
    )


def test_model_card_metadata_usage_and_metrics(tmp_path):
    (tmp_path / "eval_results.json").write_text(
        json.dumps(
            {"fid": 12.3456, "kid_mean": 0.01, "settings": {"num_samples": 1000, "scheduler": "SimpleScheduler"}}
        )
    )
    card = render_pets_card(tmp_path)
    card.save(tmp_path / "README.md")
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "unconditional-image-generation"
    assert {"diffusers-simple", "diffusers", "unconditional-image-generation", "class-conditional"} <= set(
        card.data.tags
    )
    assert card.data.datasets == ["someuser/pets"] and card.data.license == "apache-2.0"
    assert 'DiffusionPipeline.from_pretrained("someuser/pets-ddpm", trust_remote_code=True)' in card.text
    assert "class_labels=[0, 1]" in card.text and "`1` = dog" in card.text
    assert "![Samples](samples.png)" in card.text and "**0.1234**" in card.text
    assert "| fid | 12.35 |" in card.text and "| kid_mean | 0.01 |" in card.text
    assert "Evaluation settings: num_samples = 1000; scheduler = SimpleScheduler." in card.text
    assert "| batch size (per process x processes x accumulation) | 16 x 2 x 1 = 32 |" in card.text
    # the metrics are also the card's model-index (Hub metadata), one entry per metric
    assert card.data.model_name == "pets-ddpm"
    indexed = {r.metric_type: (r.metric_value, r.task_type, r.dataset_name) for r in card.data.eval_results}
    assert indexed == {"fid": (12.35, "unconditional-image-generation", "someuser/pets"),
                       "kid_mean": (0.01, "unconditional-image-generation", "someuser/pets")}
    assert "model-index:" in (tmp_path / "README.md").read_text()


def test_evaluation_results_are_added_to_an_exported_card(tmp_path):
    render_pets_card(tmp_path).save(tmp_path / "README.md")  # exported before any evaluation
    assert "## Evaluation" not in (tmp_path / "README.md").read_text()
    assert not add_eval_results_to_card(str(tmp_path))  # nothing measured yet: the card stays as it is
    for fid in (20.0, 12.3456):  # evaluated twice: the second results replace the first
        results = {"fid": fid, "settings": {"reference": "someuser/pets-test", "reference_split": "test"}}
        (tmp_path / "eval_results.json").write_text(json.dumps(results))
        assert add_eval_results_to_card(str(tmp_path))
    text = (tmp_path / "README.md").read_text()
    card = ModelCard.load(tmp_path / "README.md")
    assert text.count("## Evaluation") == 1 and "| fid | 12.35 |" in text and "| fid | 20 |" not in text
    assert "Evaluation settings: reference = someuser/pets-test; reference_split = test." in text
    assert "Trained for 7 optimizer steps" in text and card.data.datasets == ["someuser/pets"]  # the rest is kept
    indexed = [(r.metric_type, r.metric_value, r.dataset_name, r.dataset_split) for r in card.data.eval_results]
    assert indexed == [("fid", 12.35, "someuser/pets-test", "test")] and card.data.model_name == "pets-ddpm"

    # a card without the section's markers (rendered by an older version) gets the section at its end
    (tmp_path / "README.md").write_text(text.replace("<!-- evaluation:start -->", "").replace("<!-- evaluation:end -->", ""))
    assert add_eval_results_to_card(str(tmp_path))
    assert (tmp_path / "README.md").read_text().rstrip().endswith("<!-- evaluation:end -->")


# --- errors before training ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_dataset(tmp_path_factory):
    """A saved dataset without an image column, and one with an image column and an integer label."""
    root = tmp_path_factory.mktemp("datasets")
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).save_to_disk(root / "text")
    image = Image.new("L", (8, 8))
    datasets.Dataset.from_dict({"picture": [image, image], "label": [0, 1]}).save_to_disk(root / "int_label")
    return root


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--image_column", "pixels"],
            r"--image_column 'pixels' is not a column of the dataset; its columns are 'image' \(Image\), "
            r"'label' \(ClassLabel\)",
        ),
        (["--label_column", "digit"], "--label_column 'digit' is not a column"),
        (["--image_column", "label"], "is a ClassLabel, not a `datasets.Image` feature"),
        (
            ["--resolution", "9"],
            r"UNet built from --resolution 9.*divisible by 2 \*\* \(len\(block_out_channels\) - 1\) = 2",
        ),
        (["--resume_from_checkpoint", "/nonexistent/checkpoint-3"], "is not a checkpoint folder"),
        (["--model_config_name_or_path", "/nonexistent/unet.json"], "no such config file"),
        (["--train_data_dir", "/nonexistent/images"], "is not a directory"),
    ],
)
def test_errors_before_training(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        run_training(tmp_path / "out", "--max_train_steps", "1", *extra)
    assert not (tmp_path / "out").exists()


def test_dataset_errors(tmp_path, text_dataset):
    with pytest.raises(ValueError, match=r"has no image column .*'text' \(Value\), 'label' \(Value\)"):
        run_training(tmp_path / "out", "--dataset_name", text_dataset / "text")
    with pytest.raises(ValueError, match=r"--label_column 'label' is a Value\(.*int64.*ClassLabel"):
        run_training(tmp_path / "out", "--dataset_name", text_dataset / "int_label", "--label_column", "label")
    with pytest.raises(ValueError, match="Could not load the dataset 'someuser/no-such-dataset'"):
        run_training(tmp_path / "out", "--dataset_name", "someuser/no-such-dataset")


def test_missing_wandb_is_a_clear_error(tmp_path):
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed")
    with pytest.raises(ImportError, match="--logger wandb needs the wandb package"):
        run_training(tmp_path, "--logger", "wandb")


def test_output_dir_of_another_run_is_refused(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(ValueError, match="is not empty .*--resume_from_checkpoint latest.*--overwrite_output_dir"):
        run_training(tmp_path, "--max_train_steps", "1")


# --- end-to-end runs -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A short class-conditional run on the embedded digits, with EMA and checkpoints."""
    output_dir = tmp_path_factory.mktemp("digits") / "run"
    args = "--label_column label --class_dropout_prob 0.2 --use_ema --max_train_steps 6 --checkpointing_steps 2 "
    args += "--checkpoints_total_limit 2 --validation_steps 3 --guidance_scale 2 --calibrate_budgets 2 3"
    run_training(output_dir, *args.split())
    return output_dir


@pytest.mark.slow
def test_digits_run_exports_a_loadable_pipeline(digits_run):
    assert {"model_index.json", "pipeline_simple.py", "unet", "scheduler", "samples.png", "README.md"} <= set(
        os.listdir(digits_run)
    )
    assert sorted(os.listdir(digits_run / "samples")) == ["step_0000003.png", "step_0000006.png"]
    assert [step for step, _ in list_checkpoints(digits_run)] == [4, 6]  # --checkpoints_total_limit 2
    assert not [name for name in os.listdir(digits_run) if name.endswith(".tmp")]
    assert os.listdir(digits_run / "logs" / "train_simple")  # tensorboard

    config = json.loads((digits_run / "unet" / "config.json").read_text())
    assert (config["in_channels"], config["sample_size"], config["num_class_embeds"]) == (1, 8, 10)  # grayscale digits
    # The export holds the EMA weights, not the training weights
    exported = load_file(digits_run / "unet" / "diffusion_pytorch_model.safetensors")
    assert_same_weights(
        exported, load_file(digits_run / "checkpoint-6" / "ema" / "diffusion_pytorch_model.safetensors")
    )
    assert not torch.equal(exported["conv_in.weight"], weights(digits_run / "checkpoint-6")["conv_in.weight"])

    card = ModelCard.load(digits_run / "README.md")
    assert card.data.library_name == "diffusers" and "diffusers-simple" in card.data.tags
    assert "trust_remote_code=True" in card.text and "Trained for 6 optimizer steps" in card.text

    pipeline = DiffusionPipeline.from_pretrained(str(digits_run), trust_remote_code=True)
    images = pipeline(batch_size=2, num_inference_steps=2, class_labels=[3, 7], generator=torch.manual_seed(0)).images
    assert [(image.mode, image.size) for image in images] == [("L", (8, 8))] * 2
    # --calibrate_budgets 2 3: the final export carries calibrated grids, which set_timesteps(N) uses
    grids = pipeline.scheduler.config.calibrated_timesteps
    assert sorted(grids) == ["2", "3"] and [len(grids[n]) for n in ("2", "3")] == [2, 3]
    pipeline.scheduler.set_timesteps(3)
    assert pipeline.scheduler.timesteps.tolist() == pytest.approx(grids["3"])


@pytest.mark.slow
def test_finetune_from_the_exported_pipeline_with_bf16(digits_run, tmp_path):
    """A pipeline folder as --model_config_name_or_path: its weights and scheduler are the starting point; its UNet
    cannot be resized by flags."""
    with pytest.raises(ValueError, match="cannot change the pretrained UNet"):
        run_training(tmp_path / "bad", "--model_config_name_or_path", digits_run, "--label_column", "label")
    args = "--label_column label --max_train_steps 2 --mixed_precision bf16"
    run_training(tmp_path / "ft", "--model_config_name_or_path", digits_run, *args.split(), unet_flags="")
    before = load_file(digits_run / "unet" / "diffusion_pytorch_model.safetensors")
    after = load_file(tmp_path / "ft" / "unet" / "diffusion_pytorch_model.safetensors")
    assert before.keys() == after.keys() and not torch.equal(before["conv_out.weight"], after["conv_out.weight"])
    assert (
        json.loads((tmp_path / "ft" / "scheduler" / "scheduler_config.json").read_text())["num_train_timesteps"] == 100
    )
    assert "| mixed precision | bf16 |" in (tmp_path / "ft" / "README.md").read_text()


@pytest.mark.slow
def test_image_folder_with_a_broken_image(tmp_path, caplog):
    images = make_image_folder(
        tmp_path / "images", [((12, 10), "RGB"), ((10, 14), "RGBA"), ((9, 9), "L"), ((16, 12), "RGB")]
    )
    (images / "a" / "broken.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(ValueError, match="Could not decode the image"):
        run_training(
            tmp_path / "strict", "--train_data_dir", images, "--max_train_steps", "1", "--train_batch_size", "5"
        )
    args = "--label_column label --decode_errors skip --max_train_steps 2 --train_batch_size 5 --random_flip "
    args += "--center_crop --save_images_epochs 1 --dataloader_num_workers 1 --gradient_checkpointing"
    run_training(tmp_path / "out", "--train_data_dir", images, *args.split())
    config = json.loads((tmp_path / "out" / "unet" / "config.json").read_text())
    assert (config["in_channels"], config["num_class_embeds"]) == (3, 2)
    assert "2 images failed to decode and were skipped" in caplog.text  # one per epoch of 5 images, 2 epochs
    assert sorted(os.listdir(tmp_path / "out" / "samples")) == ["step_0000001.png", "step_0000002.png"]  # every epoch


@pytest.mark.slow
def test_streaming_a_saved_dataset(tmp_path, text_dataset):
    args = "--image_column picture --label_column label --num_class_embeds 2 --streaming --max_train_steps 3 "
    args += (
        "--train_batch_size 2 --checkpointing_steps 2 --prediction_type v_prediction --snr_gamma 5 --noise_offset 0.05"
    )
    run_training(tmp_path / "out", "--dataset_name", text_dataset / "int_label", *args.split())
    state = json.loads((tmp_path / "out" / "checkpoint-2" / "trainer_state.json").read_text())
    assert (state["global_step"], state["epoch"], state["batches_in_epoch"]) == (2, 1, 1)  # one batch per epoch
    assert (
        json.loads((tmp_path / "out" / "scheduler" / "scheduler_config.json").read_text())["prediction_type"]
        == "v_prediction"
    )


@pytest.mark.slow
def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
    with pytest.raises(
        FloatingPointError, match=r"The loss is (nan|inf) at step \d+ .*The last checkpoint is .*checkpoint-1"
    ):
        args = "--max_train_steps 20 --checkpointing_steps 1 --checkpoints_total_limit 1 --learning_rate 1e30 "
        args += "--lr_scheduler constant --max_grad_norm 0"
        run_training(tmp_path, *args.split())
    ((step, path),) = list_checkpoints(tmp_path)
    assert all(torch.isfinite(t).all() for t in weights(path).values())  # the NaN step never reached the weights
    assert not (tmp_path / "model_index.json").exists()


@pytest.mark.parametrize(
    "device, threads, cores, processes, warned",
    [("cpu", 1, 2, 1, True), ("cpu", 2, 2, 1, False), ("cpu", 1, 2, 2, False), ("cpu", 2, 8, 2, True), ("cuda", 1, 8, 1, False)],
)
def test_idle_cores_warning(device, threads, cores, processes, warned):
    warning = train.idle_cores_warning(device, threads, cores, processes)
    assert (warning is not None) == warned
    if warned:
        assert f"--num_cpu_threads_per_process {cores // processes}" in warning and f"on {cores} cores" in warning


def free_port() -> int:
    """A free TCP port below the ephemeral range. A port from `bind(0)` is free only until another process's `bind(0)`
    or `connect` takes it, such as gloo's listeners in a run started just before; ports below the range are never
    handed out that way."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as file:
        ephemeral_start = int(file.read().split()[0])
    for port in random.sample(range(10000, ephemeral_start), 100):
        with socket.socket() as probe:
            try:
                probe.bind(("", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"No free port in 10000-{ephemeral_start - 1}.")


def launch_training(args, output_dir, processes=1, config_file=None):
    """Starts `accelerate launch training/train.py` with a tiny model: DDP with `processes` > 1, or as `config_file`
    (an Accelerate config) says. Returns the `Popen`."""
    command = [ACCELERATE, "launch", *"--num_machines 1 --mixed_precision no --dynamo_backend no".split()]
    command += ["--num_processes", str(processes), "--main_process_port", str(free_port())]
    if config_file is not None:
        command += ["--config_file", config_file]
    elif processes > 1:
        command.append("--multi_gpu")  # without CUDA, Accelerate runs the processes with the gloo backend
    command += [TRAIN_SCRIPT, *TINY_RUN.split(), *TINY_UNET.split(), "--output_dir", str(output_dir), *args]
    # A session of its own: a SIGKILL to the group ends the launcher and the training processes, like a preemption.
    return subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def descendants(pid: int) -> list[int]:
    """The processes `pid` started, and the ones they started (from /proc): torchrun gives its training processes
    sessions of their own, so a signal to the launcher's process group does not reach them."""
    parents = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as file:
                parents[int(stat.split("/")[2])] = int(file.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
    found, parents_now = [], {pid}
    while parents_now:
        parents_now = {child for child, parent in parents.items() if parent in parents_now}
        found += parents_now
    return found


def finish_training(process, timeout: float = 240) -> str:
    """Waits for a `launch_training` run (a tiny one takes well under a minute) and returns its output, asserting that
    it succeeded. A run still going after `timeout` seconds is killed with every process it started, and the test
    fails with its output, instead of hanging until pytest's timeout."""
    try:
        output = process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        for pid in [*descendants(process.pid), process.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        output = process.communicate()[0]
        raise AssertionError(f"The run did not end within {timeout} s; its output:\n{output[-3000:]}") from None
    assert process.returncode == 0, output[-3000:]
    return output


@pytest.mark.slow
def test_sigkill_and_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    args = "--label_column label --class_dropout_prob 0.3 --dropout 0.1 --random_flip --use_ema --snr_gamma 5 "
    args += "--noise_offset 0.1 --max_train_steps 120 --checkpointing_steps 20 --train_batch_size 8 "
    args = (args + "--gradient_accumulation_steps 2").split()
    uninterrupted = launch_training(args, tmp_path / "a")
    killed = launch_training(args, tmp_path / "b")
    while not list_checkpoints(tmp_path / "b") and killed.poll() is None:
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL, killed.stdout.read()[-3000:]
    finish_training(uninterrupted)
    (step, _), *_ = reversed(list_checkpoints(tmp_path / "b"))
    assert step < 120, "the run finished before it could be killed"

    # What a kill during a save leaves behind is ignored: a temporary folder, and a checkpoint without its state file
    shutil.copytree(tmp_path / "b" / f"checkpoint-{step}", tmp_path / "b" / "checkpoint-110.tmp")
    (tmp_path / "b" / "checkpoint-115").mkdir()
    resumed = launch_training(args + ["--resume_from_checkpoint", "latest"], tmp_path / "b")
    output = finish_training(resumed)
    assert f"Resumed from {tmp_path / 'b' / f'checkpoint-{step}'} at step {step}" in output
    if len(os.sched_getaffinity(0)) > 1:  # launched without --num_cpu_threads_per_process: 1 thread, and a warning
        assert "--num_cpu_threads_per_process" in output, output[-3000:]

    assert_same_weights(weights(tmp_path / "a" / "checkpoint-120"), weights(tmp_path / "b" / "checkpoint-120"))
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert_same_weights(load_file(tmp_path / "a" / unet), load_file(tmp_path / "b" / unet))  # the EMA weights


@pytest.mark.slow
def test_two_gloo_processes(tmp_path):
    args = "--label_column label --max_train_steps 3 --checkpointing_steps 3 --use_ema"
    output = finish_training(launch_training(args.split(), tmp_path, processes=2))
    assert "Num processes: 2" in output
    checkpoint = tmp_path / "checkpoint-3"
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= set(os.listdir(checkpoint))
    card = (tmp_path / "README.md").read_text()
    assert "16 x 2 x 1 = 32" in card and "on 2 process(es)" in card
    pipeline = DiffusionPipeline.from_pretrained(str(tmp_path), trust_remote_code=True)
    image = pipeline(batch_size=1, num_inference_steps=2, class_labels=[1], output_type="np").images
    assert image.shape == (1, 8, 8, 1) and np.isfinite(image).all()
