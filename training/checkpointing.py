# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""Resumable checkpoints: written atomically, verified before use, and kept per run line.

A checkpoint `output_dir/checkpoint-<step>/` holds what `accelerator.save_state` writes (model weights as
safetensors, optimizer, lr scheduler, gradient scaler, and every process's RNG states; under FSDP the model and
optimizer state as every process's shards), the full EMA weights as a `SimpleUNet` folder (`ema/`),
`trainer_state.json` (step, epoch, position in the epoch, seed, lineage: see `lineage.py`) and, written last,
`manifest.json`: the size and sha256 of every other file. It is first written to `checkpoint-<step>.tmp/`, flushed to
disk, and renamed.

A checkpoint is complete only with its manifest, and usable only if every file matches it: resuming from a given
checkpoint refuses an incomplete or corrupt one with a `ValueError` naming the checkpoint and the file; `latest`
skips them with a warning and takes the newest complete checkpoint of the current line (and refuses if the line has
checkpoints but none of them is complete, rather than start over).
"""

import hashlib
import json
import logging
import os
import re
import shutil

import torch

from diffusers_simple_training.atomic import fsync_tree, replace_path
from diffusers_simple_training.fsdp import gathered_ema, shard_ema_like
from diffusers_simple_training.lineage import RunLine, read_marker


logger = logging.getLogger(__name__)
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_NAME = "trainer_state.json"
MANIFEST_NAME = "manifest.json"
EMA_FOLDER = "ema"
RNG_STATE_FILE = "random_states_{}.pkl"  # Accelerate's name for the RNG states of process {}


# --- manifests -------------------------------------------------------------------------------------------------------


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str) -> None:
    """Writes `folder/manifest.json`: the size and sha256 of every file under `folder`."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, folder).replace(os.sep, "/")
            if relative != MANIFEST_NAME:
                files[relative] = {"size": os.path.getsize(path), "sha256": _sha256(path)}
    with open(os.path.join(folder, MANIFEST_NAME), "w", encoding="utf-8") as f:
        json.dump({"files": dict(sorted(files.items()))}, f, indent=2)


def verify_checkpoint(path: str) -> dict:
    """Checks every file of the checkpoint `path` against its manifest, and that it holds the RNG states of each of
    its processes; returns its trainer state. Raises a `ValueError` naming the checkpoint and the bad file."""
    manifest_path = os.path.join(path, MANIFEST_NAME)
    if not os.path.isfile(manifest_path):
        what = "it was not completely written" if os.path.isfile(os.path.join(path, STATE_NAME)) else "no checkpoint"
        raise ValueError(f"The checkpoint {path} is incomplete: it has no {MANIFEST_NAME} ({what}).")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            files = json.load(f)["files"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"The checkpoint {path} is corrupt: {MANIFEST_NAME} is unreadable ({error}).") from error
    for name, expected in files.items():
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            raise ValueError(f"The checkpoint {path} is incomplete: {name} is missing.")
        if os.path.getsize(file) != expected["size"] or _sha256(file) != expected["sha256"]:
            raise ValueError(
                f"The checkpoint {path} is corrupt: {name} does not match its size and sha256 in {MANIFEST_NAME}."
            )
    if STATE_NAME not in files:
        raise ValueError(f"The checkpoint {path} is incomplete: {STATE_NAME} is missing.")
    state = read_trainer_state(path)
    for process in range(state.get("num_processes", 1)):
        if RNG_STATE_FILE.format(process) not in files:
            raise ValueError(
                f"The checkpoint {path} is incomplete: {RNG_STATE_FILE.format(process)} (the RNG states of process "
                f"{process}) is missing; resuming without it would not continue the run exactly."
            )
    return state


def read_trainer_state(path: str) -> dict:
    """The `trainer_state.json` of the checkpoint `path`: `global_step`, `epoch`, `batches_in_epoch`, `seed`,
    the batch layout and the lineage fields."""
    with open(os.path.join(path, STATE_NAME), encoding="utf-8") as f:
        return json.load(f)


def _try_state(path: str) -> dict | None:
    try:
        return read_trainer_state(path)
    except (OSError, ValueError):
        return None


# --- finding checkpoints ---------------------------------------------------------------------------------------------


def checkpoint_folders(output_dir: str) -> list[tuple[int, str]]:
    """Every `checkpoint-<step>` folder in `output_dir`, complete or not, as `(step, path)`, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = CHECKPOINT_PATTERN.match(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    return sorted(found)


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """The complete checkpoints (those with a manifest) in `output_dir` as `(step, path)`, oldest first."""
    folders = checkpoint_folders(output_dir)
    return [(step, path) for step, path in folders if os.path.isfile(os.path.join(path, MANIFEST_NAME))]


def latest_checkpoint(output_dir: str) -> str | None:
    """The newest usable checkpoint of the line last started in `output_dir` (all checkpoints if it has no marker),
    skipping incomplete or corrupt ones with a warning; None if there is no checkpoint at all (a new run)."""
    line = read_marker(output_dir)
    skipped = []
    for _, path in reversed(checkpoint_folders(output_dir)):
        state = _try_state(path)
        if line is not None and state is not None and not line.contains(state):
            continue  # superseded, or of another run
        try:
            verify_checkpoint(path)
            return path
        except ValueError as error:
            logger.warning(f"--resume_from_checkpoint latest skips {path}: {error}")
            skipped.append(path)
    if line is not None and line.resumed_from and not skipped:  # resumed from another folder, no checkpoint yet
        verify_checkpoint(line.resumed_from)
        return line.resumed_from
    if skipped:
        raise ValueError(
            f"No complete checkpoint to resume in {output_dir}: {skipped} are incomplete or corrupt (see the "
            "warnings). "
            "Pass one of its complete checkpoints, if any, to --resume_from_checkpoint, or --overwrite_output_dir "
            "without --resume_from_checkpoint to start over."
        )
    return None


def resolve_checkpoint(resume_from_checkpoint: str | None, output_dir: str) -> str | None:
    """The checkpoint folder to resume from: `None` for a new run, `latest_checkpoint(output_dir)` for "latest" (`None`
    if there is none yet, so the same command starts or continues a run), or the given folder, verified."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        return latest_checkpoint(output_dir)
    if not os.path.isfile(os.path.join(resume_from_checkpoint, STATE_NAME)) and not os.path.isfile(
        os.path.join(resume_from_checkpoint, MANIFEST_NAME)
    ):
        raise ValueError(
            f"--resume_from_checkpoint {resume_from_checkpoint!r} is not a checkpoint folder (it has no "
            f"{STATE_NAME}); pass a `checkpoint-<step>` folder or 'latest'. Checkpoints in --output_dir: "
            f"{[path for _, path in list_checkpoints(output_dir)] or 'none'}."
        )
    verify_checkpoint(resume_from_checkpoint)
    return resume_from_checkpoint


def is_newest_of_its_line(path: str, output_dir: str) -> bool:
    """Whether no checkpoint in `output_dir` continues the line of the checkpoint `path` beyond it."""
    state = read_trainer_state(path)
    for _, other in checkpoint_folders(output_dir):
        other_state = _try_state(other)
        same_line = other_state is not None and other_state.get("line") == state.get("line")
        if same_line and other_state["global_step"] > state["global_step"]:
            return False
    return True


# --- saving and loading ----------------------------------------------------------------------------------------------


def save_checkpoint(
    accelerator, output_dir: str, step: int, state: dict, ema=None, total_limit: int | None = None, line=None
) -> str:
    """Saves the training state atomically as `output_dir/checkpoint-<step>`; call it on every process. With
    `total_limit`, keeps the newest `total_limit` checkpoints of `line`'s history (never the one just saved) and
    deletes the checkpoints it superseded. Returns the checkpoint folder."""
    final = os.path.join(output_dir, f"checkpoint-{step}")
    temporary = final + ".tmp"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)  # left over by a run killed while saving
    accelerator.wait_for_everyone()
    # Saving must not change the random state of training: EMAModel.save_pretrained initialises a model.
    with torch.random.fork_rng(devices=[]):
        accelerator.save_state(temporary)  # every process writes its own RNG states (and its shards, under FSDP)
        if ema is not None:
            ema = gathered_ema(ema)  # under FSDP every process takes part; the main one saves the full EMA model
        if accelerator.is_main_process:
            if ema is not None:
                ema.save_pretrained(os.path.join(temporary, EMA_FOLDER))
            with open(os.path.join(temporary, STATE_NAME), "w", encoding="utf-8") as f:
                json.dump(state, f, indent=2)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_manifest(temporary)  # last: a checkpoint without it is incomplete
        fsync_tree(temporary)
        replace_path(temporary, final)
        if total_limit is not None:
            prune_checkpoints(output_dir, line, total_limit, keep=final)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(output_dir: str, line: RunLine | None, total_limit: int, keep: str) -> None:
    """Deletes all but the newest `total_limit` complete checkpoints of `line`'s history (all checkpoints if `line` is
    None), and the complete checkpoints that `line` superseded; never `keep`."""
    history, superseded = [], []
    for step, path in list_checkpoints(output_dir):
        state = _try_state(path)
        in_history = line is None or (state is not None and line.contains(state))
        (history if in_history else superseded).append(path)
    for path in history[:-total_limit] + superseded:
        if os.path.abspath(path) != os.path.abspath(keep):
            if path in superseded:
                logger.info(f"Deleting {path}, superseded by the run resumed from {line.resumed_from}.")
            shutil.rmtree(path)


def load_checkpoint(accelerator, path: str, ema=None) -> dict:
    """Restores what [`save_checkpoint`] saved (the RNG states last) and returns its trainer state. A process whose RNG
    states are missing is refused (Accelerate would go on with fresh ones and only log it)."""
    state = read_trainer_state(path)
    rng_file = os.path.join(path, RNG_STATE_FILE.format(accelerator.process_index))
    if accelerator.process_index < state.get("num_processes", 1) and not os.path.isfile(rng_file):
        raise ValueError(f"The checkpoint {path} is incomplete: {os.path.basename(rng_file)} is missing.")
    if ema is not None:
        sharded_like = list(ema.shadow_params)
        loaded = type(ema).from_pretrained(os.path.join(path, EMA_FOLDER), model_cls=ema.model_cls)
        ema.load_state_dict(loaded.state_dict())
        ema.to(accelerator.device)
        shard_ema_like(ema, sharded_like)  # under FSDP, this process keeps its shard of the full EMA weights
    accelerator.load_state(path)
    return state
