"""Pure evaluation arithmetic: perplexity, bits per byte, win rates, accuracies."""

from __future__ import annotations

import math

from ..intervals import wilson_interval  # noqa: F401  (re-exported: evaluation's intervals)


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


def _fit_length_logit(outcomes, length_feature, length_l2: float, iterations: int = 50):
    """(theta0, theta1) maximising the mean log-likelihood of outcomes (soft labels in [0, 1]) under
    P(win) = sigmoid(theta0 + theta1 * length_feature), minus length_l2 / 2 * theta1^2; Newton's
    method in float64. outcomes, length_feature: (N,) tensors."""
    import torch

    x = torch.stack([torch.ones_like(length_feature), length_feature], 1)  # (N, 2)
    penalty = torch.tensor([[0.0, 0.0], [0.0, length_l2]], dtype=torch.float64)
    theta = torch.zeros(2, dtype=torch.float64)
    for _ in range(iterations):
        p = torch.sigmoid(x @ theta)
        grad = x.T @ (p - outcomes) / len(outcomes) + penalty @ theta
        hessian = (x.T * (p * (1 - p))) @ x / len(outcomes) + penalty + 1e-9 * torch.eye(2, dtype=torch.float64)
        step = torch.linalg.solve(hessian, grad)
        theta = theta - step
        if float(step.abs().max()) < 1e-10:
            break
    return float(theta[0]), float(theta[1])


def length_controlled_win_rate(outcomes: list[float], lengths: list[float], reference_lengths: list[float],
                               length_l2: float = 1e-3, bootstrap: int = 200, seed: int = 0) -> dict:
    """Win rate with the effect of response length regressed out, as AlpacaEval 2 does (Dubois et al. 2024).

    A logistic regression of each head-to-head outcome (1 win, 0.5 tie, 0 loss) on the length
    difference: P(win) = sigmoid(theta0 + theta1 * tanh((len - ref_len) / sd)), sd the standard
    deviation of the differences (the length feature is standardised and bounded, so a few very
    long answers cannot dominate). The length-controlled win rate is the prediction with the length
    term set to zero, sigmoid(theta0): how often the policy would win at equal length. A small L2
    penalty on theta1 keeps the fit finite when length separates wins from losses completely.

    outcomes, lengths, reference_lengths: one per comparison (response tokens of both sides).
    Returns {"lc_win_rate", "lc_ci_low", "lc_ci_high" (percentile bootstrap over comparisons,
    `bootstrap` resamples, seeded), "length_coef" (theta1), "n"}.
    """
    import torch

    if not (len(outcomes) == len(lengths) == len(reference_lengths)):
        raise ValueError(f"{len(outcomes)} outcomes, {len(lengths)} lengths and {len(reference_lengths)} reference lengths")
    if not outcomes:
        raise ValueError("length_controlled_win_rate needs at least one comparison")
    y = torch.tensor(outcomes, dtype=torch.float64)
    if ((y < 0) | (y > 1)).any():
        raise ValueError("outcomes must lie in [0, 1] (1 win, 0.5 tie, 0 loss)")
    diff = torch.tensor(lengths, dtype=torch.float64) - torch.tensor(reference_lengths, dtype=torch.float64)
    sd = float(diff.std()) if len(diff) > 1 else 0.0
    feature = torch.tanh(diff / sd) if sd > 0 else torch.zeros_like(diff)

    def lc(index) -> tuple[float, float]:
        theta0, theta1 = _fit_length_logit(y[index], feature[index], length_l2)
        return 1 / (1 + math.exp(-theta0)), theta1

    rate, coef = lc(torch.arange(len(y)))
    g = torch.Generator().manual_seed(seed)
    resampled = sorted(lc(torch.randint(len(y), (len(y),), generator=g))[0] for _ in range(bootstrap))
    low, high = (resampled[int(0.025 * (bootstrap - 1))], resampled[int(0.975 * (bootstrap - 1))]) if bootstrap \
        else (rate, rate)
    return {"lc_win_rate": rate, "lc_ci_low": low, "lc_ci_high": high, "length_coef": coef, "n": len(y)}


