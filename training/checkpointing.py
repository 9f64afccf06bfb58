# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""Resumable checkpoints, written atomically.

A checkpoint `output_dir/checkpoint-<step>/` holds what `accelerator.save_state` writes (model weights as
safetensors, optimizer, lr scheduler, gradient scaler, and every process's RNG states), the EMA weights as a
`SimpleUNet` folder (`ema/`), and `trainer_state.json` (step, epoch, position in the epoch, seed). It is first written
to `checkpoint-<step>.tmp/`, flushed to disk, and renamed: a run killed while saving leaves only a `.tmp` folder,
which `latest` ignores and the next save replaces.
"""

import json
import os
import re
import shutil

import torch


CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_NAME = "trainer_state.json"
EMA_FOLDER = "ema"


def fsync_tree(path: str) -> None:
    """Flushes every file under `path`, and the folders themselves, to disk."""
    for root, _, files in os.walk(path):
        for name in files:
            _fsync(os.path.join(root, name))
        _fsync(root)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_path(source: str, target: str) -> None:
    """Moves `source` to `target` (a file or a folder), replacing what is there: with `os.replace` for a file, and for
    a folder by renaming the old one aside first, so that `target` is at every moment either complete or absent."""
    if os.path.isdir(target) and not os.path.islink(target):
        old = target + ".old.tmp"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(target, old)
        os.rename(source, target)
        shutil.rmtree(old)
    else:
        os.replace(source, target)
    _fsync(os.path.dirname(os.path.abspath(target)))


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """The complete checkpoints in `output_dir` as `(step, path)`, oldest first (`.tmp` folders are not listed)."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = CHECKPOINT_PATTERN.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isfile(os.path.join(path, STATE_NAME)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_checkpoint(resume_from_checkpoint: str | None, output_dir: str) -> str | None:
    """The checkpoint folder to resume from: `None` for a new run, the newest checkpoint in `output_dir` for "latest"
    (`None` if there is none yet, so the same command starts or continues a run), or the given folder."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1][1] if checkpoints else None
    if not os.path.isfile(os.path.join(resume_from_checkpoint, STATE_NAME)):
        raise ValueError(
            f"--resume_from_checkpoint {resume_from_checkpoint!r} is not a checkpoint folder (it has no "
            f"{STATE_NAME}); "
            f"pass a `checkpoint-<step>` folder or 'latest'. Checkpoints in --output_dir: "
            f"{[path for _, path in list_checkpoints(output_dir)] or 'none'}."
        )
    return resume_from_checkpoint


def save_checkpoint(
    accelerator, output_dir: str, step: int, state: dict, ema=None, total_limit: int | None = None
) -> str:
    """Saves the training state atomically as `output_dir/checkpoint-<step>`; call it on every process. Keeps the
    `total_limit` newest checkpoints. Returns the checkpoint folder."""
    final = os.path.join(output_dir, f"checkpoint-{step}")
    temporary = final + ".tmp"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)  # left over by a run killed while saving
    accelerator.wait_for_everyone()
    # Saving must not change the random state of training: EMAModel.save_pretrained initialises a model.
    with torch.random.fork_rng(devices=[]):
        accelerator.save_state(temporary)  # every process writes its own RNG states
        if accelerator.is_main_process:
            if ema is not None:
                ema.save_pretrained(os.path.join(temporary, EMA_FOLDER))
            with open(os.path.join(temporary, STATE_NAME), "w", encoding="utf-8") as f:
                json.dump(state, f, indent=2)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        fsync_tree(temporary)
        replace_path(temporary, final)
        if total_limit is not None:
            for _, path in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(path)
    accelerator.wait_for_everyone()
    return final


def read_trainer_state(path: str) -> dict:
    """The `trainer_state.json` of the checkpoint `path`: `global_step`, `epoch`, `batches_in_epoch`, `seed`."""
    with open(os.path.join(path, STATE_NAME), encoding="utf-8") as f:
        return json.load(f)


def load_checkpoint(accelerator, path: str, ema=None) -> dict:
    """Restores what [`save_checkpoint`] saved (the RNG states last) and returns its trainer state."""
    if ema is not None:
        loaded = type(ema).from_pretrained(os.path.join(path, EMA_FOLDER), model_cls=ema.model_cls)
        ema.load_state_dict(loaded.state_dict())
        ema.to(accelerator.device)
    accelerator.load_state(path)
    return read_trainer_state(path)
