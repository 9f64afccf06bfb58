# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""Writing the trained pipeline into the output folder, in a way a crash cannot leave half-written."""

import os
import shutil

from diffusers_simple import SimpleDiffusionPipeline
from diffusers_simple_training.checkpointing import fsync_tree, replace_path


GRID_NAME = "samples.png"
CARD_NAME = "README.md"


def export_pipeline(unet, scheduler, output_dir: str, grid, card) -> None:
    """
    Saves `SimpleDiffusionPipeline(unet, scheduler)` with its sample grid (`samples.png`) and model card
    (`README.md`) into `output_dir`, where `DiffusionPipeline.from_pretrained(output_dir, trust_remote_code=True)`
    loads it.

    Everything is written to `output_dir/pipeline.tmp/` and flushed first; then each entry replaces its old version by
    a rename (`model_index.json` last). A crash leaves every file either old or new, never truncated.
    """
    staging = os.path.join(output_dir, "pipeline.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    SimpleDiffusionPipeline(unet=unet, scheduler=scheduler).save_pretrained(staging)
    grid.save(os.path.join(staging, GRID_NAME))
    card.save(os.path.join(staging, CARD_NAME))
    fsync_tree(staging)
    for name in sorted(os.listdir(staging), key=lambda name: name == "model_index.json"):
        replace_path(os.path.join(staging, name), os.path.join(output_dir, name))
    os.rmdir(staging)
