"""Reductions over the real (mask == 1) entries of padded tensors.

Every statistic in RLHF is taken over response tokens only; padding and prompt positions carry
mask 0. These helpers follow torchtune's ``rlhf/rewards.py`` and TRL's ``core`` utilities.
"""

from typing import Callable, Optional

import torch
from torch import Tensor


def masked_sum(x: Tensor, mask: Tensor, dim: Optional[int] = None) -> Tensor:
    """Sum of ``x`` where ``mask`` is 1.

    x, mask: the same shape, e.g. (B, T); mask is 0/1 (bool or float).
    Returns a scalar when ``dim`` is None, else ``x`` reduced over ``dim``.
    """
    # where() rather than x * mask, so a NaN/inf sitting in a padded slot cannot leak in.
    masked = torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return masked.sum() if dim is None else masked.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: Optional[int] = None) -> Tensor:
    """Mean of ``x`` over entries with ``mask`` == 1; 0 where the mask is empty.

    x, mask: the same shape, e.g. (B, T). Returns a scalar when ``dim`` is None, else ``x``
    reduced over ``dim`` (e.g. (B,) for dim=1).
    """
    count = masked_sum(torch.ones_like(x), mask, dim)
    # clamp keeps 0/0 out: an empty mask gives 0/1 = 0 rather than NaN.
    return masked_sum(x, mask, dim) / count.clamp(min=1)


# Sums a tensor over the processes that hold the other rows of a batch (data parallelism), so a
# statistic is that of the whole batch; None means the rows at hand are the whole batch.
SumAcross = Optional[Callable[[Tensor], Tensor]]


def masked_moments(x: Tensor, mask: Tensor, unbiased: bool = True, sum_across: SumAcross = None) -> tuple[Tensor, Tensor]:
    """(mean, variance) of ``x`` over all entries with ``mask`` == 1 (scalars), two passes.

    x, mask: the same shape, e.g. (B, T). With ``unbiased`` the sum of squares is divided by
    n - 1 (Bessel), as ``torch.var`` does; the variance is 0 when fewer than two entries (or one,
    biased) are real, so a degenerate batch never yields NaN. ``sum_across``: see SumAcross.
    """
    total = (lambda t: t) if sum_across is None else sum_across
    count, x_sum = total(torch.stack([masked_sum(torch.ones_like(x), mask), masked_sum(x, mask)]))
    mean = x_sum / count.clamp(min=1)
    sum_sq = total(masked_sum((x - mean) ** 2, mask))
    denom = count - 1 if unbiased else count
    return mean, sum_sq / denom.clamp(min=1)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True, sum_across: SumAcross = None) -> Tensor:
    """Variance of ``x`` over all entries with ``mask`` == 1 (a scalar); see ``masked_moments``."""
    return masked_moments(x, mask, unbiased, sum_across)[1]


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8, sum_across: SumAcross = None) -> Tensor:
    """Normalise ``x`` to zero mean and unit variance over its masked entries.

    x, mask: (B, T). Returns (B, T); entries with mask 0 are transformed too but are meaningless.
    With ``shift_mean=False`` the mean is added back (only the scale changes), as PPO
    implementations do for rewards, where the sign of the mean carries meaning.
    Follows the advantage normalisation of Schulman et al. 2017 (PPO) as in OpenAI baselines.
    ``sum_across``: the mean and variance are those of the whole batch (see SumAcross).
    """
    mean, var = masked_moments(x, mask, sum_across=sum_across)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    return whitened if shift_mean else whitened + mean
