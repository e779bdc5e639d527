"""Over-optimisation signals that need no gold reward: pure functions on what a policy sampled.

A policy that games its reward model leaves traces a run can see without an oracle (Gao et al.
2023; Coste et al. 2023; Singhal et al. 2023 on length): the members of a reward ensemble start
to disagree on its samples, reward becomes a function of length, responses grow (or stop ending
with EOS), and they repeat themselves. Where a gold scorer is given, the proxy also rises while
the gold falls. `rlhf.train.guard_overopt` keeps these per step and warns; this module only
computes.

Each rollout step (a PPO step, an online-DPO round) is reduced to a `StepSample`. Signals compare
the latest `window` steps with the first `window` (the baseline); each is oriented so that a
larger value is more suspicious, and warns past its threshold (`THRESHOLDS`, overridable):

    disagreement_rise   ensemble std of the scores, relative rise over the baseline (0.5 = +50%)
    length_reward_corr  Pearson correlation of reward and length over the latest window's responses
    length_drift        |mean length / baseline mean length - 1|
    eos_drop            baseline share ending with EOS minus the latest window's
    repetition_rise     share of repeated word 3-grams in a response, rise over the baseline
    distinct_drop       1 - distinct word 2-grams of the latest window / the baseline's
    gold_drop           while the proxy's trend over the latest window is up: how surely the gold
                        trends down over it (minus the t statistic of the gold's slope; else 0)

The guard score of a step is the reward's gain over the baseline in baseline standard deviations,
minus ALARM_WEIGHT for each threshold's worth that a signal went past its threshold: the highest
reward reached while the signals stayed quiet. The reward is the gold where one is given (the
checkpoint kept as best is then the best by gold), else the proxy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

# name -> (default threshold, one line for warnings and the report)
SIGNALS: dict[str, tuple[float, str]] = {
    "disagreement_rise": (0.5, "the reward ensemble's members disagree more on the policy's samples than at the start"),
    "length_reward_corr": (0.5, "reward has become a function of response length"),
    "length_drift": (0.5, "mean response length moved far from the start"),
    "eos_drop": (0.25, "fewer responses end with EOS than at the start"),
    "repetition_rise": (0.15, "responses repeat their own phrases more than at the start"),
    "distinct_drop": (0.3, "responses are less diverse than at the start"),
    "gold_drop": (2.0, "the proxy reward rises while the gold reward falls"),
}
THRESHOLDS: dict[str, float] = {name: default for name, (default, _) in SIGNALS.items()}
T_MAX = 100.0  # bound of trend_t (a perfectly straight line has an infinite t statistic)
ALARM_WEIGHT = 5.0  # guard score lost per threshold's worth of overshoot (one signal at 1.2x its threshold: -1)
REPEAT_N = 3  # repetition within a response: word 3-grams
DISTINCT_N = 2  # diversity across responses: word 2-grams (distinct-2, Li et al. 2016)


@dataclass(frozen=True)
class StepSample:
    """One rollout step reduced to what the guard reads. B = responses of the step."""

    rewards: tuple[float, ...] | None  # (B,) proxy reward per response (PPO: the score optimised); None: unscored
    lengths: tuple[int, ...]  # (B,) response length in tokens
    ended: tuple[bool, ...] | None  # (B,) the response reached EOS before the token limit; None = unknown
    repetition: float  # mean over responses of repeated_ngram_share (word 3-grams)
    distinct: float  # distinct_n of the step's responses (word 2-grams)
    disagreement: float | None = None  # ensemble reward: mean std of the members' scores; None = not an ensemble
    gold: float | None = None  # mean gold score of the step's responses; None = no gold scorer


def ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    """The word n-grams of `text` (whitespace-separated words, lower-cased), in order."""
    words = text.lower().split()
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def repeated_ngram_share(text: str, n: int = REPEAT_N) -> float:
    """Share of the n-grams of one response that repeat an earlier n-gram of it: 1 - unique / total.
    0 for a response with no repeat (or shorter than n words)."""
    grams = ngrams(text, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def distinct_n(texts: Sequence[str], n: int = DISTINCT_N) -> float:
    """distinct-n (Li et al. 2016): unique n-grams over all n-grams of all the texts together.
    1 when no text has n words (nothing can repeat)."""
    grams = [g for text in texts for g in ngrams(text, n)]
    return len(set(grams)) / len(grams) if grams else 1.0


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("mean of no values")
    return sum(values) / len(values)


def std(values: Sequence[float]) -> float:
    """Population standard deviation."""
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson correlation; None with fewer than 3 points or when either side is constant."""
    if len(xs) != len(ys):
        raise ValueError(f"pearson needs paired values, got {len(xs)} and {len(ys)}")
    if len(xs) < 3:
        return None
    mx, my = mean(xs), mean(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of ys on xs; None with fewer than 2 points or constant xs."""
    if len(xs) != len(ys):
        raise ValueError(f"slope needs paired values, got {len(xs)} and {len(ys)}")
    if len(xs) < 2:
        return None
    mx, my = mean(xs), mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx > 0 else None


def step_sample(responses: Sequence[str], rewards: Sequence[float] | None, lengths: Sequence[int],
                ended: Sequence[bool] | None = None, disagreement: float | None = None,
                gold: float | None = None) -> StepSample:
    """A StepSample from one step's responses (B,), their proxy scores (B,) and lengths (B,)."""
    n = len(responses)
    if n == 0:
        raise ValueError("a step with no responses")
    for name, values in (("rewards", rewards), ("lengths", lengths), ("ended", ended)):
        if values is not None and len(values) != n:
            raise ValueError(f"{n} responses but {len(values)} {name}")
    return StepSample(
        rewards=None if rewards is None else tuple(float(r) for r in rewards), lengths=tuple(int(x) for x in lengths),
        ended=None if ended is None else tuple(bool(e) for e in ended),
        repetition=mean([repeated_ngram_share(r) for r in responses]), distinct=distinct_n(responses),
        disagreement=None if disagreement is None else float(disagreement),
        gold=None if gold is None else float(gold))


def _pooled(steps: Sequence[StepSample], field: str) -> list[float]:
    return [float(v) for s in steps for v in getattr(s, field)]


def window_signals(baseline: Sequence[StepSample], recent: Sequence[StepSample]) -> dict[str, float]:
    """The signals of SIGNALS that these steps allow (absent when they cannot be computed: no
    ensemble, EOS unknown, no gold, constant values)."""
    if not baseline or not recent:
        raise ValueError("window_signals needs baseline and recent steps")
    out: dict[str, float] = {}
    if all(s.disagreement is not None for s in (*baseline, *recent)):
        start = mean([s.disagreement for s in baseline])
        if start > 0:
            out["disagreement_rise"] = mean([s.disagreement for s in recent]) / start - 1.0
    scored = all(s.rewards is not None for s in recent)
    corr = pearson(_pooled(recent, "lengths"), _pooled(recent, "rewards")) if scored else None
    if corr is not None:
        out["length_reward_corr"] = corr
    start_length = mean(_pooled(baseline, "lengths"))
    if start_length > 0:
        out["length_drift"] = abs(mean(_pooled(recent, "lengths")) / start_length - 1.0)
    if all(s.ended is not None for s in (*baseline, *recent)):
        out["eos_drop"] = mean(_pooled(baseline, "ended")) - mean(_pooled(recent, "ended"))
    out["repetition_rise"] = mean([s.repetition for s in recent]) - mean([s.repetition for s in baseline])
    start_distinct = mean([s.distinct for s in baseline])
    if start_distinct > 0:
        out["distinct_drop"] = 1.0 - mean([s.distinct for s in recent]) / start_distinct
    if scored and all(s.gold is not None for s in recent):
        drop = gold_drop([mean(s.rewards) for s in recent], [s.gold for s in recent])
        if drop is not None:
            out["gold_drop"] = drop
    return out


def trend_t(values: Sequence[float]) -> float | None:
    """The t statistic of the least-squares slope of values (W,) on their index: slope / its
    standard error (W - 2 degrees of freedom), clamped to [-T_MAX, T_MAX] (a perfect line has no
    error). None with fewer than 3 values; 0 for constant values."""
    n = len(values)
    if n < 3:
        return None
    xs = list(range(n))
    b = slope(xs, values)
    mx, my = mean(xs), mean(values)
    residual = sum((y - (my + b * (x - mx))) ** 2 for x, y in zip(xs, values))
    sxx = sum((x - mx) ** 2 for x in xs)
    error = math.sqrt(residual / (n - 2) / sxx)
    if error == 0:
        return 0.0 if b == 0 else math.copysign(T_MAX, b)
    return max(-T_MAX, min(T_MAX, b / error))


def gold_drop(proxy: Sequence[float], gold: Sequence[float]) -> float | None:
    """proxy, gold: (W,) per-step means over a window. While the proxy trends up (slope > 0), how
    surely the gold trends down: -trend_t(gold), never below 0; 0 while the proxy is not rising.
    None when the window is too short (W < 3)."""
    proxy_slope, gold_t = slope(list(range(len(proxy))), proxy), trend_t(gold)
    if proxy_slope is None or gold_t is None:
        return None
    return max(0.0, -gold_t) if proxy_slope > 0 else 0.0


def window_measures(recent: Sequence[StepSample]) -> dict[str, float]:
    """Figures logged beside the signals but not warned on: the slope of reward on length (reward
    per extra token) over the window's responses and, with gold, the correlation of the proxy's
    and the gold's per-step means over the window."""
    out: dict[str, float] = {}
    if any(s.rewards is None for s in recent):
        return out
    length_slope = slope(_pooled(recent, "lengths"), _pooled(recent, "rewards"))
    if length_slope is not None:
        out["reward_length_slope"] = length_slope
    if all(s.gold is not None for s in recent):
        corr = pearson([mean(s.rewards) for s in recent], [s.gold for s in recent])
        if corr is not None:
            out["proxy_gold_corr"] = corr
    return out


def step_measures(step: StepSample) -> dict[str, float]:
    """One step's own figures: mean length, reward per token, EOS share, repetition, distinct-2,
    ensemble disagreement."""
    out = {"length": mean(step.lengths), "repetition": step.repetition, "distinct_2": step.distinct}
    if step.rewards is not None:
        out["reward_per_token"] = mean([r / max(n, 1) for r, n in zip(step.rewards, step.lengths)])
    if step.ended is not None:
        out["eos_rate"] = mean([float(e) for e in step.ended])
    if step.disagreement is not None:
        out["disagreement"] = step.disagreement
    return out


def severities(signals: dict[str, float], thresholds: dict[str, float]) -> dict[str, float]:
    """signal / threshold for each signal with a threshold > 0 (0 turns a signal's warning off);
    >= 1 is past the threshold."""
    return {name: value / thresholds[name] for name, value in signals.items() if thresholds.get(name, 0) > 0}


def guard_score(baseline: Sequence[StepSample], recent: Sequence[StepSample], severity: dict[str, float]) -> float:
    """The reward's gain of the latest window over the baseline, minus ALARM_WEIGHT * (severity - 1)
    for each signal past its threshold. The reward is the gold where every step has one (the best
    checkpoint is then the best by gold; the proxy can rise while the gold falls): its gain in
    standard deviations of the baseline's per-step gold means (1 when those do not vary).
    Otherwise the proxy: its gain in baseline standard deviations of the per-response score (0
    without scores)."""
    gain = 0.0
    if all(s.gold is not None for s in (*baseline, *recent)):
        start = [s.gold for s in baseline]
        gain = (mean([s.gold for s in recent]) - mean(start)) / (std(start) or 1.0)
    elif all(s.rewards is not None for s in (*baseline, *recent)):
        start = _pooled(baseline, "rewards")
        gain = (mean(_pooled(recent, "rewards")) - mean(start)) / (std(start) or 1.0)
    return gain - ALARM_WEIGHT * sum(s - 1.0 for s in severity.values() if s > 1.0)


def parse_thresholds(overrides: Sequence[str]) -> dict[str, float]:
    """THRESHOLDS with NAME=VALUE overrides applied; an unknown name or a bad value is an error."""
    out = dict(THRESHOLDS)
    for item in overrides:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in THRESHOLDS:
            raise ValueError(f"guard threshold {item!r}: expected NAME=VALUE with NAME one of {', '.join(THRESHOLDS)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"guard threshold {item!r}: {value!r} is not a number") from None
        if not math.isfinite(out[name]) or out[name] < 0:
            raise ValueError(f"guard threshold {item!r}: must be a finite number >= 0 (0 = no warning)")
    return out
