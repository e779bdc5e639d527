"""One run per run directory: an exclusive `fcntl.flock` on `OUT/.lock`, which holds the pid.

The kernel releases a flock when its process dies, however it dies, so the lock of a killed run
is stale by construction and the next run simply takes it over. The pid in the file only names
the holder in the error message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = ".lock"

_held: dict[Path, int] = {}  # lock files this process holds -> their descriptors


class RunDirLocked(FileExistsError):
    """Another process is running in this run directory."""


def acquire(run_path: Path) -> None:
    """Lock `run_path` (which must exist) for this process, or raise RunDirLocked.

    Re-entrant within one process: a stage that runs again in the same process (the demo, a test
    after an interrupted run whose objects are still alive) keeps the lock it holds.
    """
    path = (Path(run_path) / LOCK_NAME).resolve()
    if path in _held:
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunDirLocked(
            f"{run_path} is in use by another run (pid {holder}): wait for it to finish, stop it, "
            "or choose another --out"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.fsync(fd)
    _held[path] = fd  # held until the process exits


def release(run_path: Path) -> None:
    """Give up the lock on `run_path` early (the process exiting does the same)."""
    path = (Path(run_path) / LOCK_NAME).resolve()
    fd = _held.pop(path, None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def held(run_path: Path) -> bool:
    """Whether this process holds the lock on `run_path`."""
    return (Path(run_path) / LOCK_NAME).resolve() in _held
