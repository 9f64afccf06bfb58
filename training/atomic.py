# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""Writing files and folders so that a crash leaves each one either complete or absent, never half-written."""

import os
import shutil


def fsync_tree(path: str) -> None:
    """Flushes every file under `path`, and the folders themselves, to disk."""
    for root, _, files in os.walk(path):
        for name in files:
            fsync_path(os.path.join(root, name))
        fsync_path(root)


def fsync_path(path: str) -> None:
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
    fsync_path(os.path.dirname(os.path.abspath(target)))


def write_text(path: "str | os.PathLike", text: str) -> None:
    """Writes `text` (UTF-8) to the file `path` through a temporary file beside it: a crash or an error leaves the old
    file or the new one, never a truncated one."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8", newline="") as f:  # "\n" kept as is, as ModelCard.save does
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        replace_path(temporary, str(path))
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
