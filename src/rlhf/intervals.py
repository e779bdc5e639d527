"""Confidence intervals that evaluation (rlhf.eval) and the feedback app (rlhf.feedback, which
never imports torch) both report: plain Python, no dependencies."""

from __future__ import annotations

import math


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion successes / n (95% for z = 1.96): unlike mean +- z * se,
    it stays inside [0, 1] and is not empty at 0 or n successes. (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)
