# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""Run lines: which checkpoints of an output folder belong to the run being continued.

A *line* is the sequence of checkpoints one run writes, continued by every resume from its newest checkpoint.
Resuming from an older checkpoint starts a new line branching off it: the checkpoints the abandoned line wrote after
the branch point are *superseded*. The checkpoints of the current line's history are those of the line itself and,
for each ancestor line, those up to the step it was left at; `latest`, `--checkpoints_total_limit` and the run's
lineage only ever look at them.

Each checkpoint's `trainer_state.json` records its `line`, the `ancestors` of the line (`[line, step]` pairs, oldest
first) and its `parent` checkpoint (the one saved before it, or the one the run resumed from). The output folder's
`training_run.json` (its marker, written atomically at the first write of every run) records the line being
written, so that `latest` resumes the line most recently started even before it saved a checkpoint.
"""

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field

from diffusers_simple_training.atomic import write_text


MARKER_NAME = "training_run.json"


@dataclass
class RunLine:
    id: str
    ancestors: list[list] = field(default_factory=list)  # [line id, last step of it in this history], oldest first
    resumed_from: str | None = None  # the checkpoint the line started from (None: from scratch)

    def contains(self, state: dict) -> bool:
        """Whether the checkpoint with trainer state `state` is in this line's history."""
        line, step = state.get("line"), state.get("global_step", -1)
        return line == self.id or any(line == ancestor and step <= last for ancestor, last in self.ancestors)

    def state(self, parent: str | None) -> dict:
        """The lineage fields of a checkpoint of this line saved after `parent`."""
        return {"line": self.id, "ancestors": self.ancestors, "parent": parent}


def new_line_id() -> str:
    return uuid.uuid4().hex[:12]


def line_for_resume(state: dict, path: str, is_newest_of_its_line: bool) -> RunLine:
    """The line a run resumed from the checkpoint `path` (trainer state `state`) writes: the checkpoint's own line if
    it is that line's newest checkpoint, else a new line branching off it."""
    ancestors = [list(pair) for pair in state.get("ancestors", [])]
    if is_newest_of_its_line and state.get("line"):
        return RunLine(state["line"], ancestors, path)
    if state.get("line"):
        ancestors.append([state["line"], state["global_step"]])
    return RunLine(new_line_id(), ancestors, path)


def read_marker(output_dir: str) -> RunLine | None:
    """The line last started in `output_dir`, or None if it has no (readable) marker."""
    try:
        with open(os.path.join(output_dir, MARKER_NAME), encoding="utf-8") as f:
            record = json.load(f)
        return RunLine(record["line"], record.get("ancestors", []), record.get("resumed_from"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_marker(output_dir: str, line: RunLine) -> None:
    """Records (atomically) that `output_dir` holds a training run whose current line is `line`."""
    record = {
        "line": line.id,
        "ancestors": line.ancestors,
        "resumed_from": line.resumed_from,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    write_text(os.path.join(output_dir, MARKER_NAME), json.dumps(record, indent=2))
