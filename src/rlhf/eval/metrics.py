"""Pure evaluation arithmetic: perplexity, bits per byte, win rates, accuracies."""

from __future__ import annotations

import math


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """exp of the mean negative log-likelihood per token (nats)."""
    return math.exp(nll_sum / max(n_tokens, 1))


def bits_per_byte(nll_sum: float, n_bytes: int) -> float:
    """Tokenizer-independent compression: total NLL in bits divided by the UTF-8 bytes scored."""
    return nll_sum / math.log(2) / max(n_bytes, 1)


def win_rate(outcomes: list[float], z: float = 1.96) -> dict:
    """Head-to-head win rate with ties counted as half a win, and a normal-approximation
    confidence interval.

    outcomes: one per comparison, 1 (win), 0.5 (tie) or 0 (loss). Returns {"win_rate", "ci_low",
    "ci_high", "n", "wins", "ties", "losses"}: the mean outcome and mean +- z * s / sqrt(n), s the
    sample standard deviation of the outcomes (z = 1.96: 95%), clipped to [0, 1].
    """
    if not outcomes:
        raise ValueError("win_rate needs at least one comparison")
    if any(o not in (0, 0.5, 1) for o in outcomes):
        raise ValueError("outcomes must be 1 (win), 0.5 (tie) or 0 (loss)")
    n = len(outcomes)
    mean = sum(outcomes) / n
    var = sum((o - mean) ** 2 for o in outcomes) / (n - 1) if n > 1 else 0.0
    half = z * math.sqrt(var / n)
    return {"win_rate": mean, "ci_low": max(0.0, mean - half), "ci_high": min(1.0, mean + half), "n": n,
            "wins": sum(o == 1 for o in outcomes), "ties": sum(o == 0.5 for o in outcomes),
            "losses": sum(o == 0 for o in outcomes)}


def pairwise_outcomes(scores_a: list[float], scores_b: list[float]) -> list[float]:
    """1 where a scores higher, 0.5 on a tie, 0 where b does (a noiseless judge of two scores)."""
    if len(scores_a) != len(scores_b):
        raise ValueError(f"{len(scores_a)} scores against {len(scores_b)}")
    return [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores_a, scores_b)]
