# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""Validation samples: a grid of images generated with the pipeline being trained."""

import contextlib
import math

import numpy as np
import torch
from PIL import Image

from diffusers_simple import SimpleDiffusionPipeline, SimpleScheduler, SimpleUNet
from diffusers_simple_training.fsdp import full_state_dict, is_sharded


MIN_CELL_SIZE = 64  # small images are enlarged (nearest neighbour) so that the grid is easy to look at


def make_grid(images: np.ndarray, columns: int) -> Image.Image:
    """Tiles `images` (float NHWC in [0, 1]) row by row into `columns` columns, padding with black."""
    count, height, width, channels = images.shape
    rows = math.ceil(count / columns)
    grid = np.zeros((rows * height, columns * width, channels), dtype=np.uint8)
    for i, image in enumerate((images * 255).round().astype(np.uint8)):
        row, column = divmod(i, columns)
        grid[row * height : (row + 1) * height, column * width : (column + 1) * width] = image
    grid = Image.fromarray(grid[..., 0] if channels == 1 else grid)
    scale = max(1, MIN_CELL_SIZE // height)
    return grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)


@torch.no_grad()
def sample_grid(
    unet,
    scheduler,
    num_images: int,
    seed: int,
    num_inference_steps: int | None = None,
    guidance_scale: float = 1.0,
) -> Image.Image:
    """Generates `num_images` images from a fixed seed and returns them as a grid. A class-conditional `unet` gets the
    labels 0, 1, 2, ... in turn, one class per column."""
    pipeline = SimpleDiffusionPipeline(unet=unet, scheduler=SimpleScheduler.from_config(scheduler.config))
    pipeline.set_progress_bar_config(disable=True)
    num_classes = unet.config.num_class_embeds
    labels = [i % num_classes for i in range(num_images)] if num_classes else None
    images = pipeline(
        batch_size=num_images,
        generator=torch.Generator(unet.device).manual_seed(seed),
        num_inference_steps=num_inference_steps,
        class_labels=labels,
        guidance_scale=guidance_scale,
        output_type="np",
    ).images
    columns = min(num_classes, num_images) if num_classes else math.ceil(math.sqrt(num_images))
    return make_grid(images, columns)


@contextlib.contextmanager
def inference_unet(model, ema, accelerator):
    """Yields the UNet to sample and export on the main process, and None on the others: `model` in eval mode with
    the EMA weights (if any). Afterwards the training weights, mode and random state are back, so sampling and
    exporting never change the course of training. Call it on every process: a model sharded by FSDP is gathered into
    a full copy first."""
    device = accelerator.device
    rng = contextlib.nullcontext() if not accelerator.is_main_process else torch.random.fork_rng(
        devices=[device] if device.type == "cuda" else []
    )
    if is_sharded(model.parameters()):
        weights = full_state_dict(model, ema)  # every process takes part in the gathering
        with rng:  # building the copy draws initial weights
            unet = SimpleUNet.from_config(model.config).to(device).eval() if accelerator.is_main_process else None
            if unet is not None:
                unet.load_state_dict(weights)
            yield unet
        return
    if not accelerator.is_main_process:
        yield None
        return
    if ema is not None:
        ema.store(model.parameters())
        ema.copy_to(model.parameters())
    model.eval()
    try:
        with rng:
            yield model
    finally:
        model.train()
        if ema is not None:
            ema.restore(model.parameters())


def log_grid(trackers, grid: Image.Image, step: int) -> None:
    """Logs `grid` to the TensorBoard or Weights & Biases trackers of Accelerate."""
    for tracker in trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("samples", np.asarray(grid.convert("RGB")), step, dataformats="HWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({"samples": wandb.Image(grid)}, step=step)
