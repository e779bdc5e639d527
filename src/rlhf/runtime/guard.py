"""Keep NaN and inf away from the weights.

A non-finite loss or gradient norm, once AdamW has applied it, turns every weight into NaN, and
the run carries on writing checkpoints and a model that are worthless. Every training loop asks a
`NonFiniteGuard` before each optimiser step:

    if guard.check(step, loss=loss, grad_norm=grad_norm):
        optimizer.step()
        scheduler.step()
    else:                                   # counted, gradients dropped, schedule kept in step
        advance_schedulers([scheduler])
    optimizer.zero_grad(set_to_none=True)

A single bad step (one overflowing batch) is skipped and counted; `max_bad_steps` bad steps in a
row mean the run itself is broken and stop it with a `NonFiniteError` that says what to try.
Whatever is saved first passes `assert_finite`.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Mapping
from typing import Iterable

import torch
from torch import Tensor

log = logging.getLogger(__name__)

REMEDIES = ("lower the learning rate (--lr), train in fp32 (--precision fp32), keep gradient clipping on "
            "(--max-grad-norm), and check the data (and the scorer, for rewards) for broken rows")


class NonFiniteError(ValueError):
    """A training run met NaN or inf where it must not (the CLI prints it without a traceback)."""


def _is_finite(value: float | Tensor) -> bool:
    if isinstance(value, Tensor):
        return bool(torch.isfinite(value).all())
    return math.isfinite(float(value))


def _describe(value: float | Tensor) -> str:
    """`nan`, `inf`, or for a tensor with several elements `3 of 8 non-finite`."""
    if isinstance(value, Tensor) and value.numel() != 1:
        bad = int((~torch.isfinite(value)).sum())
        return f"{bad} of {value.numel()} non-finite"
    return str(float(value))


class NonFiniteGuard:
    """Decides whether an optimiser step (or a rollout) may go ahead, and counts those that may not.

    `skipped` counts every refused step, `consecutive` the refused steps since the last good one.
    The counters are plain ints (`state_dict`), so a checkpoint can carry them.
    """

    def __init__(self, max_bad_steps: int, what: str = "step"):
        if max_bad_steps < 1:
            raise ValueError(f"max_bad_steps must be >= 1, got {max_bad_steps}")
        self.max_bad_steps = max_bad_steps
        self.what = what  # names the unit in messages: "step", "optimiser step", "rollout"
        self.skipped = 0
        self.consecutive = 0

    def check(self, step: int | str, **values: float | Tensor) -> bool:
        """True when every value (a number or a tensor of any shape) is finite.

        Otherwise the step is counted as skipped and False returned; the caller must drop its
        gradients. After `max_bad_steps` refused steps in a row, raises NonFiniteError naming
        the step and the non-finite values. `step` names the step in messages: a number, or
        text such as "2 of step 7".
        """
        bad = {name: value for name, value in values.items() if not _is_finite(value)}
        if not bad:
            self.consecutive = 0
            return True
        self.skipped += 1
        self.consecutive += 1
        found = ", ".join(f"{name}={_describe(value)}" for name, value in bad.items())
        if self.consecutive >= self.max_bad_steps:
            raise NonFiniteError(
                f"{self.what} {step}: non-finite {found}; {self.consecutive} {self.what}s in a row were "
                f"non-finite (--max-bad-steps {self.max_bad_steps}), so the run stops before NaN reaches the weights. "
                f"To fix it: {REMEDIES}."
            )
        log.warning("%s %s skipped: non-finite %s (%d skipped so far, %d in a row)", self.what, step, found,
                    self.skipped, self.consecutive)
        return False

    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict) -> None:
        self.skipped, self.consecutive = int(state["skipped"]), int(state["consecutive"])


_SCHEDULER_ORDER_WARNING = re.escape("Detected call of `lr_scheduler.step()` before `optimizer.step()`")


def advance_schedulers(schedulers: Iterable) -> None:
    """Step learning-rate schedulers over a skipped optimiser step, so the learning rate stays a
    function of the step number (a resumed run ends where an uninterrupted one does).

    torch warns when the very first scheduler step comes before any optimiser step, as if the
    calls were in the wrong order; here the optimiser step was skipped on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SCHEDULER_ORDER_WARNING)
        for scheduler in schedulers:
            scheduler.step()


def non_finite_entries(state, prefix: str = "") -> list[str]:
    """Dotted names of the non-finite floating-point tensors (and floats) in `state`: a module,
    a tensor, or nested dicts, lists and tuples of them (state_dicts, optimiser states)."""
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    if isinstance(state, Tensor):
        floating = state.is_floating_point() or state.is_complex()
        return [prefix or "tensor"] if floating and not _is_finite(state) else []
    if isinstance(state, float):
        return [prefix or "value"] if not math.isfinite(state) else []
    if isinstance(state, Mapping):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return []  # ints, strings, numpy RNG arrays: never NaN
    found = []
    for key, value in items:
        found += non_finite_entries(value, f"{prefix}.{key}" if prefix else str(key))
    return found


def assert_finite(state, what: str) -> None:
    """Raise NonFiniteError when `state` (see `non_finite_entries`) holds NaN or inf; `what`
    names it in the message ("checkpoint step-40", "model for runs/sft/model")."""
    bad = non_finite_entries(state)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise NonFiniteError(f"refusing to save {what}: non-finite values in {shown}. "
                             f"Nothing was written. To fix it: {REMEDIES}.")
