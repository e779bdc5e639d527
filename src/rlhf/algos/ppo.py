"""Policy-gradient losses: PPO's clipped surrogate and clipped value loss, and plain REINFORCE.

All per-token inputs are (B, T) over response tokens with ``mask`` 1 on real tokens. Losses are
token-level means over the whole batch (every real token weighs the same), as in InstructGPT's
PPO-ptx and OpenRLHF; a trainer wanting a per-sequence mean can pass its own weighting in mask.
"""

import torch
from torch import Tensor

from rlhf.algos.masked import SumAcross, masked_mean, masked_var


def clipped_surrogate(
    log_ratio: Tensor, advantages: Tensor, mask: Tensor, clip_low: float, clip_high: float | None = None,
    dual_clip: float | None = None,
) -> tuple[Tensor, dict]:
    """Per-token loss of PPO's clipped surrogate (Schulman et al. 2017, eq. 7) with DAPO's
    asymmetric clip (Yu et al. 2025, "clip-higher") and the dual clip of Ye et al. 2020 ("Mastering
    Complex Control in MOBA Games with Deep Reinforcement Learning", eq. 5). Not yet reduced: the
    caller aggregates it (``rlhf.algos.policy_loss.LOSS_AGGREGATIONS``).

    log_ratio: (B, T) log pi_theta - log pi_old (with grad; per token, or GSPO's per-sequence
    value repeated on each token); advantages: (B, T), or (B,) broadcast over tokens; mask: (B, T).
        ratio     = exp(log_ratio)
        objective = min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A)
        objective = max(objective, dual_clip * A)   where A < 0 (dual clip; None or 0 = off)
        loss_t    = -objective
    clip_high None is clip_low (symmetric PPO). A larger clip_high lets unlikely tokens with A > 0
    grow further per step, which keeps entropy from collapsing (DAPO). Where A < 0 the plain
    surrogate is unbounded in the ratio: a token that became far more likely (ratio 100) than when
    sampled weighs 100 times A. The dual clip (c > 1, e.g. 3) caps it at c * A, with gradient 0.
    Returns (loss (B, T), stats), stats detached masked means:
        clipfrac      share of tokens where the clipped branch is the minimum and the gradient is 0
                      (ratio > 1 + clip_high with A > 0, or ratio < 1 - clip_low with A < 0);
        dual_clipfrac share of tokens held at dual_clip * A (A < 0 and ratio > dual_clip);
        ratio_mean    mean of the ratio.
    """
    if dual_clip and dual_clip <= 1:
        raise ValueError(f"dual_clip must be > 1 (or None/0 for off), got {dual_clip}")
    clip_high = clip_low if clip_high is None else clip_high
    advantages = _per_token(advantages, log_ratio).detach()
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_low, 1 + clip_high) * advantages
    objective = torch.min(unclipped, clipped)
    dual_clipped = torch.zeros_like(ratio, dtype=torch.bool)
    if dual_clip:
        dual_clipped = (advantages < 0) & (objective < dual_clip * advantages)
        objective = torch.where(dual_clipped, dual_clip * advantages, objective)

    with torch.no_grad():
        above = (ratio > 1 + clip_high) & (advantages > 0)
        below = (ratio < 1 - clip_low) & (advantages < 0)
        stats = {
            "clipfrac": masked_mean((above | below).to(ratio.dtype), mask),
            "dual_clipfrac": masked_mean(dual_clipped.to(ratio.dtype), mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return -objective, stats


def ppo_policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, clip: float, dual_clip: float | None = None,
    clip_high: float | None = None,
) -> tuple[Tensor, dict]:
    """Clipped surrogate objective of PPO (Schulman et al. 2017, eq. 7), as a loss to minimise:
    ``clipped_surrogate`` on the token ratio, averaged over every real token of the batch.

    logp: (B, T) log pi_theta of the sampled tokens (with grad); old_logp: (B, T) log pi_old from
    the rollout; advantages: (B, T), or (B,) broadcast over tokens; mask: (B, T). ``clip`` is the
    low clip, ``clip_high`` the high one (None: the same, symmetric PPO).
    Returns (loss, stats), stats detached: clipfrac, dual_clipfrac and ratio_mean of
    ``clipped_surrogate``, and approx_kl, the masked mean of k3 = (ratio - 1) - log ratio, an
    unbiased, non-negative estimate of KL(pi_old || pi_theta) from tokens sampled by pi_old
    (Schulman 2020).
    """
    log_ratio = logp - old_logp.detach()
    per_token, stats = clipped_surrogate(log_ratio, advantages, mask, clip, clip_high, dual_clip)
    with torch.no_grad():
        stats["approx_kl"] = masked_mean(torch.expm1(log_ratio) - log_ratio, mask)
    return masked_mean(per_token, mask), stats


def ppo_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float
) -> tuple[Tensor, dict]:
    """Clipped value loss of PPO2 (OpenAI baselines; Schulman et al. 2017).

    values: (B, T) V_theta (with grad); old_values: (B, T) V from the rollout; returns: (B, T)
    targets (e.g. from ``gae``); mask: (B, T).
        V_clip = old_values + clip(values - old_values, -clip, clip)
        loss   = 0.5 * masked_mean(max((values - returns)**2, (V_clip - returns)**2))
    Returns (loss, stats) with stats["vf_clipfrac"]: share of tokens where the clipped term is
    strictly larger (its gradient is then 0), detached.
    """
    old_values = old_values.detach()
    returns = returns.detach()
    values_clipped = old_values + (values - old_values).clamp(-clip, clip)
    error = (values - returns) ** 2
    error_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(error, error_clipped), mask)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((error_clipped > error).to(values.dtype), mask)}
    return loss, stats


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor, sum_across: SumAcross = None) -> Tensor:
    """1 - Var[returns - values] / Var[returns] over masked tokens (a scalar, detached).

    values, returns, mask: (B, T). 1 is a perfect critic, 0 no better than a constant, negative
    worse. NaN when the returns have zero variance (undefined), as in OpenAI baselines.
    ``sum_across``: over every process's rows (rlhf.algos.masked.SumAcross).
    """
    with torch.no_grad():
        var_returns = masked_var(returns, mask, sum_across=sum_across)
        var_residual = masked_var(returns - values, mask, sum_across=sum_across)
        undefined = torch.full_like(var_returns, float("nan"))
        return torch.where(var_returns > 0, 1 - var_residual / var_returns, undefined)


def reinforce_loss(logp: Tensor, advantages: Tensor, mask: Tensor) -> tuple[Tensor, dict]:
    """Vanilla policy gradient (Williams 1992): loss = -masked_mean(A * logp).

    logp: (B, T) log pi_theta of the sampled tokens (with grad); advantages: (B, T) per token, or
    (B,) per sequence (e.g. from ``rloo_advantages`` / ``grpo_advantages``), broadcast over T;
    mask: (B, T). Advantages are treated as constants. Returns (loss, stats) with
    stats["advantage_mean"], the masked mean advantage.
    """
    advantages = _per_token(advantages, logp).detach()
    loss = -masked_mean(advantages * logp, mask)
    with torch.no_grad():
        stats = {"advantage_mean": masked_mean(advantages.expand_as(logp), mask)}
    return loss, stats


def _per_token(advantages: Tensor, like: Tensor) -> Tensor:
    # A per-sequence advantage (B,) applies to every token of its sequence.
    return advantages.unsqueeze(-1) if advantages.dim() == like.dim() - 1 else advantages
