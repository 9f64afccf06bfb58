"""Sample quality reached on the embedded digits after a fixed CPU training budget: this project's default recipe
(`training/train.py` defaults) vs the official Diffusers unconditional recipe (`baseline_official_recipe.py`).

Both recipes train a UNet of the same size (SimpleUNet vs UNet2DModel at matched parameter count) at the same
resolution, batch 16, for the same wall-clock budget: each recipe's number of optimizer steps is the budget divided by
its measured seconds per bare training step (forward, backward, AdamW), and the actual wall time of each training
process (start-up, data, EMA, validation and export included) is reported. Quality: the digits Fréchet distance
(Fréchet distance in the features of a classifier trained on the digits, `training/evaluate.py`) of generated samples
against all 1797 digits; the distance of as many real digits is the floor. Our pipeline samples with its defaults;
the official pipeline with DDPMPipeline at `--official_steps` (its own default, 1000, takes hours on a CPU) and at as
many steps as ours, and our sampler on the official weights.
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import (
    UNET_CLASSES,
    build_unet,
    device_and_autocast,
    machine_description,
    make_train_step,
    model_flags,
    new_figure,
    parameter_count,
    parse_args,
    simple_layers_per_block,
    time_interleaved,
    write_results,
)
from diffusers import DDPMPipeline

from diffusers_simple import SimpleDiffusionPipeline, SimpleScheduler
from diffusers_simple.pipeline_simple import DEFAULT_STEPS_FAST
from diffusers_simple_training.digits_classifier import digits_images
from diffusers_simple_training.evaluate import digits_metrics, generate

REPO = Path(__file__).resolve().parents[1]
# official_steps: DDPMPipeline's default is 1000, which takes hours for a few hundred samples on a CPU
FULL = dict(resolution=16, minutes=5.0, num_samples=500, official_steps=100, unet=dict(
    block_out_channels=(32, 64, 64), attention_levels=(False, True, True), attention_head_dim=32, norm_num_groups=8))
TINY = dict(resolution=8, minutes=0.02, num_samples=16, official_steps=10, unet=dict(
    block_out_channels=(16, 16), attention_levels=(False, True), attention_head_dim=16, norm_num_groups=8))
BATCH_SIZE = 16  # both recipes' default
RECIPES = ("ours", "official")  # SimpleUNet, UNet2DModel


def add_arguments(parser):
    parser.add_argument("--minutes", type=float, default=None, help="Training budget per recipe (default 5; tiny 0.02).")
    parser.add_argument("--num_samples", type=int, default=None, help="Generated images per evaluation (default 500).")
    parser.add_argument("--official_steps", type=int, default=None,
                        help="Steps of the long DDPMPipeline evaluation (default 100; DDPMPipeline's own default is 1000).")


def train(command: list[str], num_threads: int) -> tuple[float, float]:
    """Runs a training command in a fresh process; returns its wall time and CPU time (user + system) in seconds.
    The CPU time hardly depends on what else runs on the machine."""
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    env = dict(os.environ, OMP_NUM_THREADS=str(num_threads))
    subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.perf_counter() - start, cpu


def digits_fd(pipeline, num_samples: int, resolution: int, num_inference_steps: int) -> float:
    pipeline.set_progress_bar_config(disable=True)
    options = argparse.Namespace(num_samples=num_samples, batch_size=250, seed=0, num_inference_steps=num_inference_steps)
    samples, _ = generate(pipeline, options, None)
    return digits_metrics(samples, None, resolution)[0]["digits_fd"]


def main():
    args = parse_args(__doc__.splitlines()[0], add_arguments)
    setting = dict(TINY if args.tiny else FULL)
    setting["minutes"] = args.minutes or setting["minutes"]
    setting["num_samples"] = args.num_samples or setting["num_samples"]
    setting["official_steps"] = args.official_steps or setting["official_steps"]
    start = time.perf_counter()
    resolution = setting["resolution"]

    # Steps per recipe: the budget over the measured time of a bare training step of its UNet.
    models = {recipe: build_unet(kind, resolution, 1, **setting["unet"]) for recipe, kind in zip(RECIPES, UNET_CLASSES)}
    parameters = {recipe: parameter_count(model) for recipe, model in models.items()}
    device, autocast = device_and_autocast()
    steps = {recipe: make_train_step(model, BATCH_SIZE, resolution, device, autocast, seed=0) for recipe, model in models.items()}
    seconds_per_step = time_interleaved(steps, repeats=3 if args.tiny else 10, warmup=1)
    budget = 60 * setting["minutes"]
    train_steps = {name: max(2, int(budget / s)) for name, s in seconds_per_step.items()}
    print(f"parameters {parameters}, seconds per step {seconds_per_step}, steps for {budget:.0f} s: {train_steps}")

    layers_per_block = map(str, simple_layers_per_block(len(setting["unet"]["block_out_channels"])))
    with tempfile.TemporaryDirectory() as tmp:
        ours_dir, official_dir = os.path.join(tmp, "ours"), os.path.join(tmp, "official")
        times = {
            "ours": train([sys.executable, "training/train.py", "--output_dir", ours_dir, "--seed", "0",
                           "--max_train_steps", str(train_steps["ours"]), "--layers_per_block", *layers_per_block,
                           *model_flags(setting["resolution"], setting["unet"])], args.num_threads),
            "official": train([sys.executable, "benchmarks/baseline_official_recipe.py", "--output_dir", official_dir,
                               "--max_train_steps", str(train_steps["official"]), "--num_threads", str(args.num_threads),
                               *model_flags(setting["resolution"], setting["unet"])], args.num_threads),
        }
        ours = SimpleDiffusionPipeline.from_pretrained(ours_dir)
        official = DDPMPipeline.from_pretrained(official_dir)
        num_train_timesteps = ours.scheduler.config.num_train_timesteps  # the pipeline's default step counts
        ours_steps = num_train_timesteps if ours.scheduler.config.sampler == "ddpm" else min(DEFAULT_STEPS_FAST, num_train_timesteps)
        evaluations = [
            ("ours", f"SimpleDiffusionPipeline ({ours.scheduler.config.sampler}, default {ours_steps} steps)", ours, ours_steps),
            ("official", f"DDPMPipeline ({setting['official_steps']} steps)", official, setting["official_steps"]),
            ("official", f"DDPMPipeline ({ours_steps} steps)", official, ours_steps),
            ("official", f"SimpleDiffusionPipeline on the official weights ({ours_steps} steps)",
             SimpleDiffusionPipeline(official.unet, SimpleScheduler.from_config(ours.scheduler.config)), ours_steps),
        ]
        fd = {label: digits_fd(pipeline, setting["num_samples"], resolution, steps_) for _, label, pipeline, steps_ in evaluations}

    real = digits_images(resolution)[0]
    real = real[torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[: setting["num_samples"]]]
    floor = digits_metrics(torch.round((real + 1) * 127.5).to(torch.uint8), None, resolution)[0]["digits_fd"]

    recipe_names = {"ours": "this project (train.py defaults)", "official": "official Diffusers recipe"}
    headers = ["recipe", "parameters (M)", "train steps", "train wall / CPU time (s)", "sampling", "digits FD", "FD / ours"]
    reference = fd[evaluations[0][1]]
    rows = [[recipe_names[recipe], parameters[recipe] / 1e6, train_steps[recipe], "{:.0f} / {:.0f}".format(*times[recipe]), label,
             fd[label], fd[label] / reference]
            for recipe, label, _, _ in evaluations]
    rows.append([f"real digits ({len(real)} images, floor)", "-", "-", "-", "-", floor, floor / reference])

    figure, axes = new_figure(width=7)
    ax = axes[0, 0]
    labels = [label for _, label, _, _ in evaluations] + ["real digits (floor)"]
    values = [fd[label] for _, label, _, _ in evaluations] + [floor]
    ax.barh(labels, values, color=["C0", "C7", "C7", "C1", "C2"])
    ax.invert_yaxis()
    ax.set(xscale="log", xlabel="digits Fréchet distance (lower is better)",
           title=f"Quality after {setting['minutes']:g} CPU minutes of training")
    ax.tick_params(axis="y", labelsize=7)

    notes = f"""
Budget {setting['minutes']:g} min per recipe at {resolution}x{resolution}, 1 channel, batch {BATCH_SIZE}: measured
seconds per bare training step {seconds_per_step['ours']:.3f} (SimpleUNet) and {seconds_per_step['official']:.3f}
(UNet2DModel). UNets: channels {setting['unet']['block_out_channels']}, attention at levels {setting['unet']['attention_levels']}.
Ours: `training/train.py` with its defaults (lr 1e-4, cosine schedule, 500 warm-up steps, no EMA, dropout 0.1,
SimpleScheduler defaults) and only the UNet size, resolution and step count set. Official: `benchmarks/baseline_official_recipe.py`
(EMA, DDPMScheduler with clip_sample). The train times are those of the whole training process (start-up, data, EMA,
validation, export); the wall time also depends on what else ran on the machine, the CPU time (all threads) hardly.
{setting['num_samples']} samples per evaluation. {machine_description(args.num_threads)}; wall time
{time.perf_counter() - start:.0f} s (`benchmarks/time_to_quality.py`).
"""
    write_results(args.output_dir, "time_to_quality", "Digits quality after a fixed CPU training budget", headers, rows, notes, figure)


if __name__ == "__main__":
    main()
