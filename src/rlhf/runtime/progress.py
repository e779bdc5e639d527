"""Where the current run stands, for the message the CLI prints when the user presses Ctrl-C.

The training loops record the steps they have finished and the checkpoints they have written;
the CLI, which catches the KeyboardInterrupt, reads them back. One process runs one stage at a
time (the demo runs its stages one after another), so one module-level record is enough.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Progress:
    step: int | None = None  # optimiser (or rollout) steps finished; None before the loop starts
    checkpoint_step: int | None = None  # step of the newest checkpoint on disk
    context: str = ""  # where inside a multi-part run, e.g. "round 2/3"


CURRENT = Progress()


def start_run() -> None:
    """Forget the previous run's figures (the demo runs several stages in one process)."""
    CURRENT.step, CURRENT.checkpoint_step, CURRENT.context = None, None, ""


def record_step(step: int) -> None:
    CURRENT.step = step


def record_checkpoint(step: int) -> None:
    CURRENT.checkpoint_step = step


def record_context(context: str) -> None:
    CURRENT.context = context


def interrupted_message() -> str:
    """What to tell a user who pressed Ctrl-C: the step reached and how to continue."""
    if CURRENT.step is None:
        return "interrupted before the first step; continue with --resume"
    where = f"step {CURRENT.step}" + (f" ({CURRENT.context})" if CURRENT.context else "")
    if CURRENT.checkpoint_step is None:
        note = "no checkpoint yet: it starts again from step 0"
    else:
        note = f"it restarts from the newest checkpoint, step {CURRENT.checkpoint_step}"
    return f"interrupted at {where}; continue with --resume ({note})"
