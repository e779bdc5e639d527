"""Callbacks of a run started from Python (`rlhf.sft(..., on_step=...)`): they see what the run
writes, and may ask it to stop.

    on_step(record)          every line written to metrics.jsonl (the same dict)
    on_eval(record)          the lines that carry evaluation figures (keys starting with "eval_")
    on_checkpoint(step, path) after each checkpoint is in place

A callback that returns `False` (or calls `request_stop()`) asks the run to stop: the loop ends
after the current step, and the run finishes as a run that reached its last step does (model/
and summary.json written, `stopped_by_callback` in the summary), so nothing is lost and `--resume`
from its last checkpoint continues it. Only rank 0 calls them (it is the one that writes).
One process runs one stage at a time, so the active callbacks are one module-level record.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Callable


@dataclasses.dataclass
class Callbacks:
    on_step: Callable[[dict], object] | None = None
    on_eval: Callable[[dict], object] | None = None
    on_checkpoint: Callable[[int, Path], object] | None = None
    stop: bool = False


ACTIVE = Callbacks()


@contextlib.contextmanager
def active(on_step=None, on_eval=None, on_checkpoint=None):
    """The callbacks of the run started inside this block (the previous ones come back after it)."""
    global ACTIVE
    previous, ACTIVE = ACTIVE, Callbacks(on_step, on_eval, on_checkpoint)
    try:
        yield ACTIVE
    finally:
        ACTIVE = previous


def _call(fn, *args) -> None:
    if fn is not None and fn(*args) is False:
        ACTIVE.stop = True


def logged(record: dict) -> None:
    """A metrics line was written (rank 0)."""
    _call(ACTIVE.on_step, record)
    if any(key.startswith("eval_") for key in record):
        _call(ACTIVE.on_eval, record)


def checkpointed(step: int, path: Path) -> None:
    """A checkpoint is in place (rank 0)."""
    _call(ACTIVE.on_checkpoint, step, path)


def request_stop() -> None:
    """Ask the running loop to stop after its current step."""
    ACTIVE.stop = True


def stop_requested() -> bool:
    """Whether a callback asked the run to stop (the loops check it after each step; under a
    launcher the caller agrees it over the ranks, since only rank 0 runs callbacks)."""
    return ACTIVE.stop
