# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""The lock that gives an output folder to one training run at a time.

`output_dir/train.lock` records the holder's pid, host and start time, and the holder keeps an exclusive `flock` on
it, which the operating system releases when the process ends, however it ends. A second run finds the lock held and
is refused with the holder's name. A lock file left by a run that died (the `flock` is free, and its pid is not
running on this host) is stale: it is taken over with a warning. A lock file from another host cannot be checked from
here, so it is refused too, with the advice to delete it if that run is over. Only the main process of a distributed
run takes the lock.
"""

import fcntl
import json
import logging
import os
import socket
import sys
import time


logger = logging.getLogger(__name__)
LOCK_NAME = "train.lock"


class OutputDirLockedError(RuntimeError):
    """The output folder is in use by another run."""


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # running, as another user
        return True
    return True


def _describe(holder: dict) -> str:
    if "pid" not in holder:
        return "a run that has not written its record yet"
    return f"pid {holder.get('pid')} on host {holder.get('host')!r} (started {holder.get('started_at')})"


class RunLock:
    """`with RunLock(output_dir):` holds the output folder's lock; `acquire()` raises `OutputDirLockedError`."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, LOCK_NAME)
        self._fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read(fd)
                os.close(fd)
                raise OutputDirLockedError(
                    f"{os.path.dirname(self.path)} is in use by another training run: {_describe(holder)} holds "
                    f"{self.path}. Wait for it to end, or choose another --output_dir."
                ) from None
            try:  # a holder that released the lock may have deleted the file we opened: lock the new one
                same_file = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)
        try:
            self._check_stale(self._read(fd))
        except BaseException:
            os.close(fd)
            raise
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        record["argv"] = sys.argv
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record, indent=2).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def _check_stale(self, holder: dict) -> None:
        """The file is not locked: it is empty (new), or left by a run that ended without releasing it."""
        if not holder:
            return
        if "pid" not in holder or "host" not in holder:  # died while writing it
            logger.warning(f"Taking over the lock {self.path}, which holds no readable record of a run.")
            return
        if holder.get("host") != socket.gethostname():
            raise OutputDirLockedError(
                f"{os.path.dirname(self.path)} may be in use by another training run: {self.path} records "
                f"{_describe(holder)}, which cannot be checked from host {socket.gethostname()!r}. If that run is "
                f"over, delete {self.path}."
            )
        if holder.get("pid") != os.getpid() and _pid_running(int(holder["pid"])):
            raise OutputDirLockedError(
                f"{os.path.dirname(self.path)} is in use by another training run: {self.path} records the running "
                f"{_describe(holder)}. Wait for it to end, or choose another --output_dir."
            )
        logger.warning(f"Taking over the stale lock {self.path} of {_describe(holder)}, which is no longer running.")

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            return json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
        except ValueError:
            return {"unreadable": True}

    def release(self) -> None:
        """Deletes the lock file and releases the lock; does nothing if it is not held."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
