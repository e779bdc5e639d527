"""Scorers: anything that turns (prompt, response) text pairs into one number each.

The reward of online RL and the gold reward beside it are both scorers, named by one string:

- a reward-model directory (saved by `rlhf rm`, or any one-label sequence classifier): scored
  with `rlhf.models.load_reward_model`; its stored training-set mean and std normalise scores;
- `module:function`, a Python callable `(prompts, responses) -> sequence of floats` (a rule, a
  judge, the demo's `rlhf.demo.oracle:gold_reward`); its scores are used as they are.
  A callable with an `answers` parameter (the verifiable rewards of `rlhf.rewards`, e.g.
  `rlhf.rewards.verifiable:exact_match`) also gets each row's reference answer, the optional
  "answer" field of the prompt row (None where a row has none). A callable may return an object
  with a `parts` mapping (name -> one float per response, `rlhf.rewards.Scores`): `score` hands
  those parts back, and `rlhf ppo` logs their means as `reward/<name>`.

    scorer = load_scorer("runs/rm/model")               # or "rlhf.demo.oracle:gold_reward"
    raw = scorer(prompts, responses)                    # (B,) float32
    scorer.normalize(raw)                               # (raw - mean) / std; identity for callables

A scorer that raises, or returns anything but one finite number per response, fails with an
error naming it (its spec), the original exception kept as the cause.
"""

from __future__ import annotations

import importlib
import inspect
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
    `models`: the transformers models it runs (a reward model, each member of an ensemble; none
    for a callable), which a sharded run shards for inference (`named_models`).
    """

    def __init__(self, name: str, fn: Callable[[Sequence[PromptText], Sequence[str]], Sequence[float]],
                 mean: float = 0.0, std: float = 1.0, model_dir: Path | None = None,
                 models: Sequence[torch.nn.Module] = ()):
        if not std > 0:
            raise ValueError(f"scorer {name}: std must be > 0, got {std}")
        self.name, self._fn, self.mean, self.std, self.model_dir = name, fn, float(mean), float(std), model_dir
        self.models = tuple(models)
        self.takes_answers = _takes_answers(fn)

    def named_models(self, role: str) -> dict[str, torch.nn.Module]:
        """The models it runs by name: {role: model} for a reward model, {role/i: member i} for an
        ensemble, {} for a callable (`rlhf.runtime.Runtime.prepare_frozen` takes them so)."""
        if len(self.models) == 1:
            return {role: self.models[0]}
        return {f"{role}/{i}": model for i, model in enumerate(self.models)}

    def __call__(self, prompts: Sequence[PromptText], responses: Sequence[str],
                 allow_non_finite: bool = False, answers: Sequence[str | None] | None = None) -> torch.Tensor:
        """(B,) float32 scores. A non-finite score is an error unless `allow_non_finite` (online RL,
        whose non-finite guard skips and counts such a rollout instead of stopping the run).
        `answers`: each row's reference answer, passed on to a callable that takes them."""
        return self.score(prompts, responses, allow_non_finite, answers)[0]

    def score(self, prompts: Sequence[PromptText], responses: Sequence[str], allow_non_finite: bool = False,
              answers: Sequence[str | None] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(B,) float32 scores as `__call__`, and the named parts the callable reported (name ->
        (B,) float32; empty when it reports none)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if answers is not None and len(answers) != len(responses):
            raise ValueError(f"{len(answers)} answers but {len(responses)} responses")
        extra = {"answers": list(answers) if answers is not None else [None] * len(responses)} \
            if self.takes_answers else {}
        try:
            scores = self._fn(list(prompts), list(responses), **extra)
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
        parts = {}
        for name, values in (getattr(scores, "parts", None) or {}).items():
            part = torch.as_tensor(list(values), dtype=torch.float32)
            if part.shape != out.shape:
                raise ValueError(f"scorer {self.name}: part {name!r} has shape {tuple(part.shape)}, not {tuple(out.shape)}")
            parts[str(name)] = part
        return out, parts

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """(raw - mean) / std, with the reward model's training-set statistics (callables: 0 and 1)."""
        return (raw - self.mean) / self.std

    def __repr__(self) -> str:
        return f"Scorer({self.name!r})"


def _takes_answers(fn: Callable) -> bool:
    """True when `fn` accepts an `answers` keyword (or any keyword)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False
    return any(p.name == "answers" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


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
                batch_size: int = 64, aggregate: str = "mean", uncertainty_coef: float = 1.0) -> Scorer:
    """A Scorer from a reward-model directory or a `module:function` name (see the module docstring).

    A reward-model ensemble (`rlhf rm --ensemble K`) scores with its members' standardised scores
    combined by `aggregate` (`rlhf.algos.reward_aggregate`: mean, min, mean-minus-std with
    `uncertainty_coef`); its `score` also reports the parts ENSEMBLE_MEAN and ENSEMBLE_STD, and
    its `model_dir` is member 0 (where a PPO critic can start). Any aggregate but mean needs an
    ensemble."""
    from ..algos.reward_aggregate import REWARD_AGGREGATES

    if aggregate not in REWARD_AGGREGATES:
        raise ValueError(f"unknown reward aggregate {aggregate!r}; choose one of {', '.join(REWARD_AGGREGATES)}")
    if is_callable_spec(spec):
        _refuse_aggregate(spec, aggregate)
        return Scorer(spec, load_callable(spec))
    from ..models.ensemble import EnsembleRewardModel, member_dirs
    from ..models.load import resolve_model_dir
    from ..models.reward import load_reward_model

    from .attention import use_fp32_attention

    rm = load_reward_model(spec, device=device, precision=precision)
    if isinstance(rm, EnsembleRewardModel):
        for member in rm.members:
            use_fp32_attention(member.model)  # CPU only: see rlhf.rollout.attention
        return Scorer(str(spec), lambda p, r: ensemble_scores(rm.score_members(p, r, batch_size), aggregate,
                                                              uncertainty_coef), 0.0, 1.0, member_dirs(spec)[0],
                      [member.model for member in rm.members])
    _refuse_aggregate(spec, aggregate)
    use_fp32_attention(rm.model)  # CPU only: see rlhf.rollout.attention
    std = rm.std if rm.std > 0 else 1.0
    return Scorer(str(spec), lambda p, r: rm.score(p, r, batch_size=batch_size), rm.mean, std, resolve_model_dir(spec),
                  [rm.model])


ENSEMBLE_MEAN, ENSEMBLE_STD = "ensemble_mean", "ensemble_std"  # parts of an ensemble's score


class EnsembleScores(list):
    """One aggregated score per response (a list of floats), with `parts`: the members' mean and
    standard deviation per response (ENSEMBLE_MEAN, ENSEMBLE_STD), which `Scorer.score` hands back."""

    def __init__(self, scores, parts: dict):
        super().__init__(scores)
        self.parts = parts


def ensemble_scores(member_scores: torch.Tensor, aggregate: str, uncertainty_coef: float) -> EnsembleScores:
    """(K, B) member scores -> the aggregated (B,) scores with the ensemble's mean and std as parts."""
    from ..algos.reward_aggregate import aggregate_rewards, member_std

    return EnsembleScores(aggregate_rewards(member_scores, aggregate, uncertainty_coef).tolist(),
                          {ENSEMBLE_MEAN: member_scores.mean(0).tolist(), ENSEMBLE_STD: member_std(member_scores).tolist()})


def ensemble_stats(parts: dict) -> dict:
    """What online RL logs of an ensemble reward: `reward_std`, the mean over responses of the
    members' standard deviation (their disagreement); empty for any other scorer."""
    return {"reward_std": float(torch.as_tensor(parts[ENSEMBLE_STD]).mean())} if ENSEMBLE_STD in parts else {}


def _refuse_aggregate(spec: str, aggregate: str) -> None:
    if aggregate != "mean":
        raise ValueError(f"--reward-aggregate {aggregate} combines the members of a reward-model ensemble, but {spec} "
                         "is a single scorer: train one with `rlhf rm --ensemble K`, or use --reward-aggregate mean")
