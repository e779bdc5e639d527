"""Pure evaluation arithmetic: perplexity, bits per byte, win rates, accuracies."""

from __future__ import annotations

import math


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """exp of the mean negative log-likelihood per token (nats)."""
    return math.exp(nll_sum / max(n_tokens, 1))


def bits_per_byte(nll_sum: float, n_bytes: int) -> float:
    """Tokenizer-independent compression: total NLL in bits divided by the UTF-8 bytes scored."""
    return nll_sum / math.log(2) / max(n_bytes, 1)
