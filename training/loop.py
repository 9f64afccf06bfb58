# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""The training loop: optimizer steps, checkpoints, validation grids and exports at their intervals, and the checks
that stop a run before a non-finite loss or non-finite weights reach a checkpoint."""

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from accelerate.logging import get_logger
from tqdm.auto import tqdm

from diffusers_simple_training.checkpointing import list_checkpoints, save_checkpoint
from diffusers_simple_training.fsdp import local
from diffusers_simple_training.lineage import RunLine
from diffusers_simple_training.objective import diffusion_loss


logger = get_logger(__name__, log_level="INFO")
LOSS_WINDOW = 50  # steps averaged for the "final loss" of the model card


@dataclass
class Components:
    """What training works with, as built by the setup."""

    accelerator: object
    unet: torch.nn.Module  # as prepared by Accelerate (wrapped under DDP)
    model: torch.nn.Module  # the unwrapped UNet
    ema: object | None
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    noise_scheduler: object
    batches: object  # data.TrainBatches
    null_class: int | None


@dataclass
class RunState:
    """Where the run is; what a checkpoint saves besides the weights, optimizer and RNG states."""

    seed: int
    line: RunLine
    batch_layout: dict  # processes, batch size, accumulation: what a position in an epoch means
    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # batches of `epoch` already trained on
    parent: str | None = None  # the last checkpoint saved or resumed from
    losses: deque = field(default_factory=lambda: deque(maxlen=LOSS_WINDOW))
    skipped_images: int = 0

    def trainer_state(self) -> dict:
        return {
            "global_step": self.global_step,
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
            "seed": self.seed,
            **self.batch_layout,
            **self.line.state(self.parent),
        }


@dataclass
class Schedule:
    """When to stop, save, sample and export, and the loss settings."""

    output_dir: str
    max_train_steps: int
    checkpointing_steps: int
    checkpoints_total_limit: int | None
    validation_steps: int | None
    save_images_epochs: int
    save_model_epochs: int
    max_grad_norm: float
    loss_options: dict  # snr_gamma, noise_offset, class_dropout_prob


def _last_checkpoint(output_dir: str) -> str:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else "none (no checkpoint was saved yet)"


def _optimizer_step(c: Components, schedule: Schedule, state: RunState, batch: dict) -> float:
    """Forward and backward of one batch, and the optimizer step when the accumulation is complete; returns the
    batch's loss (averaged over processes)."""
    accelerator = c.accelerator
    valid = batch["valid"].to(accelerator.device)
    state.skipped_images += int((~valid).sum())
    class_labels = batch["class_labels"].to(accelerator.device) if "class_labels" in batch else None
    with accelerator.accumulate(c.unet):
        # Under --mixed_precision, Accelerate runs the UNet in autocast; noising and loss stay in float32.
        loss = diffusion_loss(
            c.unet,
            c.noise_scheduler,
            batch["pixel_values"].to(accelerator.device),
            class_labels,
            valid,
            null_class=c.null_class,
            **schedule.loss_options,
        )
        mean_loss = accelerator.reduce(loss.detach(), reduction="mean")
        if not torch.isfinite(mean_loss):
            raise FloatingPointError(
                f"The loss is {mean_loss.item()} at step {state.global_step + 1} (epoch {state.epoch}); training "
                f"stopped before updating the weights with it. The last checkpoint is "
                f"{_last_checkpoint(schedule.output_dir)}. Try a lower --learning_rate, --max_grad_norm, or "
                "--mixed_precision bf16 instead of fp16."
            )
        accelerator.backward(loss)
        if accelerator.sync_gradients:
            if schedule.max_grad_norm:
                accelerator.clip_grad_norm_(c.unet.parameters(), schedule.max_grad_norm)
            c.optimizer.step()
            c.lr_scheduler.step()
            c.optimizer.zero_grad(set_to_none=True)
            _check_finite_weights(c, schedule, state)
    return mean_loss.item()


def _check_finite_weights(c: Components, schedule: Schedule, state: RunState) -> None:
    """Stops the run, before anything is saved, if the optimizer step made a weight non-finite (on any process)."""
    flags = torch.stack([torch.isfinite(local(p).detach()).all() for p in c.unet.parameters()])  # this shard
    bad = c.accelerator.reduce((~flags).sum().to(c.accelerator.device), reduction="sum")
    if bad:
        raise FloatingPointError(
            f"The weights are not finite after the optimizer step {state.global_step + 1} (epoch {state.epoch}), "
            f"though the loss was; training stopped before saving them. The last checkpoint is "
            f"{_last_checkpoint(schedule.output_dir)}. Try a lower --learning_rate or a --max_grad_norm."
        )


def train(c: Components, schedule: Schedule, state: RunState, validate: Callable, export: Callable) -> None:
    """Trains from `state` to `schedule.max_train_steps`. `validate()` writes a sample grid and returns it; `export(grid,
    final)` exports the pipeline. Both are called on every process (the main one does the work)."""
    accelerator = c.accelerator
    progress = tqdm(
        total=schedule.max_train_steps,
        initial=state.global_step,
        desc="Steps",
        unit="step",
        disable=not accelerator.is_main_process,
    )
    try:
        _train(c, schedule, state, validate, export, progress)
    finally:
        progress.close()


def _train(c: Components, schedule: Schedule, state: RunState, validate, export, progress) -> None:
    accelerator = c.accelerator
    while state.global_step < schedule.max_train_steps:
        step_losses = []
        for batch in c.batches.epoch(state.epoch, state.batches_in_epoch):
            state.batches_in_epoch += 1
            step_losses.append(_optimizer_step(c, schedule, state, batch))
            if not accelerator.sync_gradients:
                continue
            if c.ema is not None:
                c.ema.step(c.model.parameters())
            state.global_step += 1
            state.losses.append(float(np.mean(step_losses)))
            step_losses = []
            _log_step(c, state, progress)

            if state.global_step % schedule.checkpointing_steps == 0:
                state.parent = save_checkpoint(
                    accelerator,
                    schedule.output_dir,
                    state.global_step,
                    state.trainer_state(),
                    c.ema,
                    schedule.checkpoints_total_limit,
                    state.line,
                )
                logger.info(f"Saved {state.parent}")
            if schedule.validation_steps and state.global_step % schedule.validation_steps == 0:
                validate()
            if state.global_step >= schedule.max_train_steps:
                return
        if state.batches_in_epoch == 0:
            raise ValueError(f"Process {accelerator.process_index} got no training data in epoch {state.epoch}.")
        state.epoch, state.batches_in_epoch = state.epoch + 1, 0
        # The epochs of a stream end at different steps on different processes: streams only save by steps.
        if c.batches.batches_per_epoch is not None:
            save_model = state.epoch % schedule.save_model_epochs == 0
            if save_model or state.epoch % schedule.save_images_epochs == 0:
                grid = validate()
                if save_model:
                    export(grid, final=False)


def _log_step(c: Components, state: RunState, progress) -> None:
    logs = {"loss": state.losses[-1], "lr": c.lr_scheduler.get_last_lr()[0]}
    progress.set_postfix(**logs)
    progress.update(1)
    if c.ema is not None:
        logs["ema_decay"] = c.ema.cur_decay_value
    if state.skipped_images:
        logs["skipped_images"] = state.skipped_images
    c.accelerator.log(logs, step=state.global_step)
