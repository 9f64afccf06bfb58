# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""Writing the trained pipeline into the output folder, in a way a crash cannot leave half-written, with its model
card, and pushing it to the Hub."""

import logging
import os
import shutil
from dataclasses import dataclass

import numpy as np

from diffusers_simple import SimpleDiffusionPipeline
from diffusers_simple_training.atomic import fsync_tree, replace_path
from diffusers_simple_training.calibrate import calibrate_pipeline
from diffusers_simple_training.hub import push_folder_to_hub
from diffusers_simple_training.model_card import CARD_NAME, render_model_card
from diffusers_simple_training.publish import IGNORE_PATTERNS


logger = logging.getLogger(__name__)
GRID_NAME = "samples.png"


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


@dataclass
class Publication:
    """Where and whether an export goes to the Hub."""

    repo_id: str
    push: bool = False
    push_every_save: bool = False
    token: str | None = None
    private: bool = False


def export_run(args, c, unet, state, grid, final: bool, publication: Publication, card_facts: dict) -> None:
    """Exports the pipeline of the run, with `unet` (the weights to publish: `samples.inference_unet`) and its card,
    into `args.output_dir` and pushes it when `publication` asks for it. `c` are the loop's components, `state` its
    `RunState`; `card_facts` the values of the card that do not change during the run (data, max_train_steps,
    base_model, sampling description, ...)."""
    epochs_per_step = card_facts["epochs_per_step"]
    card = render_model_card(
        args,  # the card lists the training arguments
        repo_id=publication.repo_id,
        unet=unet,
        scheduler=c.noise_scheduler,
        data=card_facts["data"],
        grid_file=GRID_NAME,
        grid_caption=f"Samples at step {state.global_step} ({card_facts['sampling']}).",
        global_step=state.global_step,
        epochs=state.global_step * epochs_per_step if epochs_per_step else state.epoch,
        final_loss=float(np.mean(state.losses)) if state.losses else None,
        loss_window=len(state.losses),
        num_processes=c.accelerator.num_processes,
        max_train_steps=card_facts["max_train_steps"],
        seed=state.seed,
        base_model=card_facts["base_model"],
    )
    scheduler = c.noise_scheduler
    if final and args.calibrate_budgets:  # per-model few-step grids, carried by the checkpoint
        pipeline = SimpleDiffusionPipeline(unet=unet, scheduler=scheduler)
        grids = calibrate_pipeline(pipeline, args.calibrate_budgets, seed=state.seed)
        scheduler = pipeline.scheduler
        logger.info(f"Calibrated time grids for {sorted(grids, key=int)} model calls: {grids}")
    export_pipeline(unet, scheduler, args.output_dir, grid, card)
    logger.info(f"Exported the pipeline at step {state.global_step} to {args.output_dir}.")
    if publication.push and (final or publication.push_every_save):
        try:
            url = push_folder_to_hub(
                args.output_dir,
                publication.repo_id,
                token=publication.token,
                private=publication.private,
                commit_message=f"Step {state.global_step}",
                ignore_patterns=IGNORE_PATTERNS,
            )
            logger.info(f"Pushed to {url}")
        except Exception as error:
            if final:
                raise
            logger.warning(f"Push at step {state.global_step} failed, training goes on: {error}")
