# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""What a run may write into: an empty or new folder, the output of a training run it resumes, or any folder with
--overwrite_output_dir. A training output is recognised by its marker `training_run.json` (written at the first
write of every run) or by checkpoints; anything else is the user's, and resuming into it is refused."""

import os
import shutil

from diffusers_simple_training.checkpointing import CHECKPOINT_PATTERN
from diffusers_simple_training.lineage import MARKER_NAME
from diffusers_simple_training.run_lock import LOCK_NAME


def is_training_output(output_dir: str) -> bool:
    names = os.listdir(output_dir) if os.path.isdir(output_dir) else []
    return MARKER_NAME in names or any(CHECKPOINT_PATTERN.match(name) for name in names)


def check_output_dir(output_dir: str, resume: bool, overwrite: bool) -> None:
    """Refuses to train into a folder that holds another run, unless told to overwrite it or to resume it, and to
    resume into a folder that holds no training run, unless told to overwrite it."""
    entries = sorted(set(os.listdir(output_dir)) - {LOCK_NAME}) if os.path.isdir(output_dir) else []
    if overwrite or not entries:
        return
    holds = f"it holds {entries[:8]}{' ...' if len(entries) > 8 else ''}"
    if not is_training_output(output_dir):
        raise ValueError(
            f"--output_dir {output_dir!r} is not empty ({holds}) and holds no training run (no {MARKER_NAME}, no "
            "checkpoints), so --resume_from_checkpoint latest has nothing to continue there and would overwrite "
            "these files. Pass --overwrite_output_dir to write into it anyway (files of the same names are "
            "replaced), or choose another --output_dir."
        )
    if not resume:
        raise ValueError(
            f"--output_dir {output_dir!r} is not empty ({holds}). Pass --resume_from_checkpoint latest to continue "
            "the run there, --overwrite_output_dir to start over in it (its checkpoints are deleted), or another "
            "--output_dir."
        )


def delete_checkpoints(output_dir: str) -> None:
    """Deletes the checkpoints (complete or not) of the run being overwritten."""
    for name in os.listdir(output_dir) if os.path.isdir(output_dir) else []:
        if CHECKPOINT_PATTERN.match(name.removesuffix(".tmp")):
            shutil.rmtree(os.path.join(output_dir, name))
