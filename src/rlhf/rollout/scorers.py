"""Scorers: anything that turns (prompt, response) text pairs into one number each.

The reward of online RL and the gold reward beside it are both scorers, named by one string:

- a reward-model directory (saved by `rlhf rm`, or any one-label sequence classifier): scored
  with `rlhf.models.load_reward_model`; its stored training-set mean and std normalise scores;
- `module:function`, a Python callable `(prompts, responses) -> sequence of floats` (a rule, a
  judge, the demo's `rlhf.demo.oracle:gold_reward`); its scores are used as they are.

    scorer = load_scorer("runs/rm/model")               # or "rlhf.demo.oracle:gold_reward"
    raw = scorer(prompts, responses)                    # (B,) float32
    scorer.normalize(raw)                               # (raw - mean) / std; identity for callables

A scorer that raises, or returns anything but one finite number per response, fails with an
error naming it (its spec), the original exception kept as the cause.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..data.records import PromptText


class ScorerError(RuntimeError):
    """A scorer raised: the message names the scorer; `__cause__` is what it raised."""


class Scorer:
    """Scores text pairs: `scorer(prompts, responses) -> (B,) float32 tensor` on the CPU.

    `mean` and `std` normalise raw scores (`normalize`); `model_dir` is the reward model's
    directory when the scorer is one (a critic can then start from its weights), else None.
    """

    def __init__(self, name: str, fn: Callable[[Sequence[PromptText], Sequence[str]], Sequence[float]],
                 mean: float = 0.0, std: float = 1.0, model_dir: Path | None = None):
        if not std > 0:
            raise ValueError(f"scorer {name}: std must be > 0, got {std}")
        self.name, self._fn, self.mean, self.std, self.model_dir = name, fn, float(mean), float(std), model_dir

    def __call__(self, prompts: Sequence[PromptText], responses: Sequence[str],
                 allow_non_finite: bool = False) -> torch.Tensor:
        """(B,) float32 scores. A non-finite score is an error unless `allow_non_finite` (online RL,
        whose non-finite guard skips and counts such a rollout instead of stopping the run)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        try:
            scores = self._fn(list(prompts), list(responses))
        except Exception as err:  # a user's function or a reward model: say which one failed
            raise ScorerError(f"scorer {self.name} failed on {len(prompts)} responses: {type(err).__name__}: {err}") from err
        try:
            out = torch.as_tensor(scores if isinstance(scores, torch.Tensor) else list(scores), dtype=torch.float32).cpu()
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"scorer {self.name} must return one number per response, got {_preview(scores)} "
                             f"({type(err).__name__}: {err})") from err
        if out.shape != (len(prompts),):
            raise ValueError(f"scorer {self.name} returned shape {tuple(out.shape)} for {len(prompts)} responses")
        if not allow_non_finite and not torch.isfinite(out).all():
            raise ValueError(f"scorer {self.name} returned a non-finite score")
        return out

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """(raw - mean) / std, with the reward model's training-set statistics (callables: 0 and 1)."""
        return (raw - self.mean) / self.std

    def __repr__(self) -> str:
        return f"Scorer({self.name!r})"


def _preview(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_callable_spec(spec: str) -> bool:
    """True for `module:function` (and not for a path that happens to contain a colon)."""
    return ":" in spec and not Path(spec).exists()


def load_callable(spec: str) -> Callable:
    """The object named by `module.path:attribute`."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{spec!r} is not of the form module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import {module_name!r} for scorer {spec!r}: {err}") from err
    try:
        fn = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r} (scorer {spec!r})") from None
    if not callable(fn):
        raise ValueError(f"{spec!r} is not callable")
    return fn


def load_scorer(spec: str, device: str | torch.device = "cpu", precision: str = "fp32",
                batch_size: int = 64) -> Scorer:
    """A Scorer from a reward-model directory or a `module:function` name (see the module docstring)."""
    if is_callable_spec(spec):
        return Scorer(spec, load_callable(spec))
    from ..models.reward import load_reward_model

    from .attention import use_fp32_attention

    rm = load_reward_model(spec, device=device, precision=precision)
    use_fp32_attention(rm.model)  # CPU only: see rlhf.rollout.attention
    std = rm.std if rm.std > 0 else 1.0
    return Scorer(str(spec), lambda p, r: rm.score(p, r, batch_size=batch_size), rm.mean, std, Path(spec))
