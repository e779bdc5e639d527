"""The over-optimisation guard of an online run (`rlhf ppo`, `rlhf dpo --online`): no gold needed.

Each step (a PPO rollout step, an online-DPO round) the stage hands the guard what it sampled, as
a `rlhf.eval.overopt.StepSample`. The guard keeps the first `window` steps as the baseline and
the latest `window` steps, and from then on each step:

- logs the signals and figures of `rlhf.eval.overopt` as `guard/<name>` (metrics.jsonl);
- warns once a signal has stayed past its threshold for `patience` steps in a row: one printed
  line, and an entry {step, signal, value, threshold, message} in summary.json `guard.warnings`
  (a signal that falls back below its threshold can warn again later);
- keeps a guard score (`guard/score`) and says when a step beats the best so far, so that the stage
  saves its policy to `best_guard/` (`save_best`);
- with `stop=True`, asks the stage to stop at the first warning (`stop_reason`).

Its whole state is plain Python (`state_dict`), saved in the stage's checkpoints so that a resumed
run logs, warns and stops exactly as the uninterrupted one.
"""

from __future__ import annotations

import copy
import json
from collections import deque
from dataclasses import asdict
from pathlib import Path

from ..eval.overopt import (SIGNALS, StepSample, guard_score, parse_thresholds, severities, step_measures,
                            step_sample, window_measures, window_signals)
from ..runtime.files import atomic_write_text, dumps, notice

BEST_DIR = "best_guard"


class OverOptGuard:
    """window: steps in the baseline and in the latest window (0 = the guard is off); patience:
    steps a signal must stay past its threshold before a warning; thresholds: NAME=VALUE
    overrides of rlhf.eval.overopt.THRESHOLDS; stop: stop the run at the first warning."""

    def __init__(self, window: int, patience: int = 1, thresholds: tuple[str, ...] = (), stop: bool = False,
                 unit: str = "step"):
        if window < 0 or patience < 1:
            raise ValueError(f"guard: window must be >= 0 and patience >= 1, got {window} and {patience}")
        if stop and window == 0:
            raise ValueError("--stop-on-overoptimisation needs the guard: set --guard-window to at least 1")
        self.window, self.patience, self.stop, self.unit = window, patience, stop, unit
        self.thresholds = parse_thresholds(thresholds)
        self.baseline: list[StepSample] = []
        self.recent: deque[StepSample] = deque(maxlen=max(window, 1))
        self.streak: dict[str, int] = {}  # signal -> steps in a row past its threshold
        self.warned: set[str] = set()  # signals whose warning stands (until they fall back)
        self.warnings: list[dict] = []
        self.best_score: float | None = None
        self.best_step: int | None = None
        self.stopped_at: dict | None = None

    @property
    def enabled(self) -> bool:
        return self.window > 0

    def observe(self, step: int, sample: StepSample) -> tuple[dict, bool]:
        """Take step `step`'s sample; returns ({"guard/<name>": value}, whether it is the best step
        so far by guard score). Before the baseline is complete only the step's own figures."""
        if not self.enabled:
            return {}, False
        if len(self.baseline) < self.window:
            self.baseline.append(sample)
        self.recent.append(sample)
        metrics = {f"guard/{k}": v for k, v in step_measures(sample).items()}
        if len(self.baseline) < self.window:
            return metrics, False
        signals = window_signals(self.baseline, self.recent)
        severity = severities(signals, self.thresholds)
        score = guard_score(self.baseline, self.recent, severity)
        metrics.update({f"guard/{k}": v for k, v in {**signals, **window_measures(self.recent)}.items()})
        metrics["guard/score"] = score
        for name in self.thresholds:
            self._check(step, name, signals.get(name), severity.get(name, 0.0))
        metrics["guard/warnings"] = len(self.warnings)
        improved = self.best_score is None or score > self.best_score
        if improved:
            self.best_score, self.best_step = score, step
        return metrics, improved

    def _check(self, step: int, name: str, value: float | None, severity: float) -> None:
        if severity < 1.0:
            self.streak[name] = 0
            self.warned.discard(name)
            return
        self.streak[name] = self.streak.get(name, 0) + 1
        if self.streak[name] < self.patience or name in self.warned:
            return
        self.warned.add(name)
        threshold = self.thresholds[name]
        message = (f"{name} = {value:.3f} past its threshold {threshold:g} for {self.streak[name]} {self.unit}(s): "
                   f"{SIGNALS[name][1]}; the policy may be over-optimising its reward")
        self.warnings.append({"step": step, "signal": name, "value": value, "threshold": threshold,
                              "message": message})
        notice(f"guard: {self.unit} {step}: {message}")
        if self.stop and self.stopped_at is None:
            self.stopped_at = {"step": step, "signal": name, "reason": message}

    @property
    def stop_reason(self) -> dict | None:
        """{step, signal, reason} once --stop-on-overoptimisation should end the run; else None."""
        return self.stopped_at

    def summary(self) -> dict:
        """What summary.json keeps under `guard`."""
        if not self.enabled:
            return {"enabled": False}
        return {"enabled": True, "window": self.window, "patience": self.patience, "thresholds": self.thresholds,
                "warnings": self.warnings, "first_warning_step": self.warnings[0]["step"] if self.warnings else None,
                "best_step": self.best_step, "best_score": self.best_score, "stopped_early": self.stopped_at}

    def state_dict(self) -> dict:
        return {"baseline": [asdict(s) for s in self.baseline], "recent": [asdict(s) for s in self.recent],
                "streak": dict(self.streak), "warned": sorted(self.warned), "warnings": list(self.warnings),
                "best_score": self.best_score, "best_step": self.best_step, "stopped_at": self.stopped_at}

    def load_state_dict(self, state: dict) -> None:
        self.baseline = [_sample(s) for s in state["baseline"]]
        self.recent = deque((_sample(s) for s in state["recent"]), maxlen=max(self.window, 1))
        self.streak, self.warned = dict(state["streak"]), set(state["warned"])
        self.warnings, self.stopped_at = list(state["warnings"]), state["stopped_at"]
        self.best_score, self.best_step = state["best_score"], state["best_step"]


def _sample(fields: dict) -> StepSample:
    tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return StepSample(**tuples)


def save_best(model, tokenizer, run_path: Path, save=None) -> Path:
    """The policy as it is now, to RUN/best_guard/, with the stage's own save (atomic, finite
    weights only; `save(model, tokenizer, directory)`, default `save_pretrained`; the runtime's
    gathers a sharded model first). A LoRA policy is copied first: saving merges the adapter,
    which must not happen to the model still training."""
    from ..models.load import save_pretrained

    to_save = copy.deepcopy(model) if hasattr(model, "merge_and_unload") else model
    return (save or save_pretrained)(to_save, tokenizer, Path(run_path) / BEST_DIR)


# ---------------------------------------------------------------- online DPO: one sample per round

SAMPLE_FILE = "guard_sample.json"  # in each round's directory: what the guard read of the round's responses


def text_sample(responses: list[str], scores: list[float] | None, tokenizer) -> StepSample:
    """A StepSample from response texts (B,), lengths re-tokenised (the sampler's own token counts
    are not kept; the count can differ where decoding is not reversible) and whether each reached
    EOS unknown; `scores` (B,) the labeller's, None for one that only compares."""
    lengths = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in responses]
    return step_sample(responses, scores, lengths)


def write_round_sample(round_dir: Path, sample: StepSample) -> None:
    atomic_write_text(Path(round_dir) / SAMPLE_FILE, dumps(asdict(sample)))


def observe_round(guard: OverOptGuard, number: int, round_dir: Path) -> tuple[dict, bool]:
    """guard.observe of round `number` (1-based) from the sample its directory keeps; nothing when
    the guard is off or the round has none (labelled before the guard existed)."""
    path = Path(round_dir) / SAMPLE_FILE
    if not guard.enabled or not path.exists():
        return {}, False
    return guard.observe(number, _sample(json.loads(path.read_text(encoding="utf-8"))))
