"""Scripted labelers: the demo's sentiment oracle, noisy the way people are.

The gold reward of a response is its VADER compound sentiment (Hutto & Gilbert 2014) in
[-1, 1]. A scripted annotator prefers response a to b with Bradley–Terry probability
σ((g_a − g_b) / temperature): it mostly picks the more positive one, and when the two are close
it is close to a coin flip, like a person. With temperature 0 it is the noiseless oracle used
to judge win rates.
"""

from __future__ import annotations

import math
import random
from functools import lru_cache


@lru_cache(maxsize=1)
def _analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment(texts: list[str]) -> list[float]:
    """VADER compound sentiment of each text, in [-1, 1]."""
    analyzer = _analyzer()
    return [analyzer.polarity_scores(t)["compound"] for t in texts]


def gold_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """The demo's gold reward, `module:function`-compatible: sentiment of the response alone."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    return sentiment(responses)


class SentimentOracle:
    """Pairwise labeler: `prefer(prompts, a, b)` → list of 0 (a preferred) or 1 (b preferred)."""

    def __init__(self, temperature: float = 0.1, seed: int = 0):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.temperature = temperature
        self.rng = random.Random(seed)

    def probability_a(self, gold_a: float, gold_b: float) -> float:
        """P(a preferred) under Bradley–Terry noise; ties split evenly."""
        if self.temperature == 0:
            return 1.0 if gold_a > gold_b else 0.0 if gold_a < gold_b else 0.5
        return 1.0 / (1.0 + math.exp(-(gold_a - gold_b) / self.temperature))

    def prefer(self, prompts: list[str], responses_a: list[str], responses_b: list[str]) -> list[int]:
        gold_a, gold_b = gold_reward(prompts, responses_a), gold_reward(prompts, responses_b)
        return [0 if self.rng.random() < self.probability_a(a, b) else 1 for a, b in zip(gold_a, gold_b)]
