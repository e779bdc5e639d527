"""The pieces a policy-gradient loss is assembled from: the importance ratio (per token, or per
sequence as in GSPO), the per-token policy loss (PPO's clipped surrogate, the plain policy
gradient, CISPO) and the aggregation of per-token losses into one number (token mean, sequence mean of
token means, or Dr. GRPO's constant normaliser).

Per-token tensors are (B, T) over response tokens with ``mask`` 1 on real tokens. Each variant is
one function, listed in a plain dict (LOG_RATIOS, POLICY_LOSSES, LOSS_AGGREGATIONS) whose keys are
the names of ``rlhf.config.algorithms``.
"""


import torch
from torch import Tensor

from rlhf.algos.masked import masked_mean, masked_sum
from rlhf.algos.ppo import _per_token, clipped_surrogate


# ---------------------------------------------------------------- importance ratios


def token_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """log pi_theta(y_t) - log pi_old(y_t) per token (PPO). logp (with grad), old_logp, mask: (B, T).
    Returns (B, T); the gradient flows through logp only."""
    return (logp - old_logp.detach()) * mask


def sequence_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """GSPO's sequence-level log ratio (Zheng et al. 2025, eq. 7), repeated on every token.

    logp (with grad), old_logp, mask: (B, T). Returns (B, T):
        log s_i = (1 / |y_i|) * sum_t (log pi_theta(y_i,t) - log pi_old(y_i,t))
    the length-normalised log of pi_theta(y_i) / pi_old(y_i), so s_i = exp(log s_i) is one ratio
    per sequence and clipping keeps or drops whole sequences. Its gradient reaches each token of
    the sequence with weight 1 / |y_i|. With one token it is the token ratio.
    """
    per_sequence = masked_mean(logp - old_logp.detach(), mask, dim=1)  # (B,)
    return per_sequence[:, None] * mask


LOG_RATIOS = {"token": token_log_ratio, "sequence": sequence_log_ratio}  # (logp, old_logp, mask) -> (B, T)


# ---------------------------------------------------------------- per-token policy losses
# Each: (log_ratio (B, T) with grad, logp (B, T) with grad, advantages (B, T) or (B,), mask (B, T),
#        clip_low, clip_high, dual_clip) -> (per-token loss (B, T), detached stats), not yet aggregated.


def clipped_policy_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, clip_low: float,
                        clip_high: float | None, dual_clip: float | None) -> tuple[Tensor, dict]:
    """PPO's clipped surrogate on ``log_ratio`` with its low, high and dual clips: see
    ``rlhf.algos.ppo.clipped_surrogate`` (``logp`` enters through the ratio)."""
    return clipped_surrogate(log_ratio, advantages, mask, clip_low, clip_high, dual_clip)


def policy_gradient_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, clip_low: float,
                         clip_high: float | None, dual_clip: float | None) -> tuple[Tensor, dict]:
    """The plain policy gradient (Williams 1992): -A * log pi per token, advantages constant. One
    on-policy step needs no importance ratio: the ratio and the clips are not read. No stats."""
    return -(_per_token(advantages, logp).detach() * logp), {}


def cispo_policy_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, clip_low: float,
                      clip_high: float | None, dual_clip: float | None = None) -> tuple[Tensor, dict]:
    """CISPO, clipped IS-weight policy optimisation (MiniMax 2025, "MiniMax-M1: Scaling Test-Time
    Compute Efficiently with Lightning Attention", arXiv 2506.13585): clip the importance weight,
    not the update. Per token
        w_t    = sg(clip(r_t, 1 - clip_low, 1 + clip_high))     r_t = exp(log_ratio), sg: no gradient
        loss_t = -w_t * A_t * log pi(y_t)
    so d loss_t / d log pi = -w_t * A_t: every token keeps its gradient, scaled by a bounded weight,
    where PPO's clipped surrogate gives the tokens it clips none (the paper's case: rare reflective
    tokens such as "However", "Wait", whose ratios grow fastest and are clipped out of the later
    off-policy updates). The paper aggregates by the token mean over the batch and uses GRPO's
    group advantages.
    Defaults of `--algo cispo` (rlhf.config.algorithms): clip_low = 1, a lower bound of 0, i.e.
    none (the paper sets eps_low large and tunes eps_high alone); clip_high = 0.28, DAPO's
    clip-higher value and Trinity-RFT's CISPO default (we found no eps_high value stated in the paper).

    log_ratio: (B, T) log pi - log pi_old (its gradient is not used); logp: (B, T) log pi (with
    grad); advantages: (B, T), or (B,) broadcast over tokens; mask: (B, T). dual_clip is not read.
    clip_high None is clip_low. Returns (loss (B, T), stats), stats detached masked means:
    clipfrac, the share of tokens whose weight is clipped (they keep their gradient), and ratio_mean.
    """
    clip_high = clip_low if clip_high is None else clip_high
    advantages = _per_token(advantages, logp).detach()
    ratio = log_ratio.detach().exp()
    weight = ratio.clamp(1 - clip_low, 1 + clip_high)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((weight != ratio).to(ratio.dtype), mask),
                 "ratio_mean": masked_mean(ratio, mask)}
    return -(weight * advantages * logp), stats


POLICY_LOSSES = {"clipped": clipped_policy_loss, "pg": policy_gradient_loss, "cispo": cispo_policy_loss}


# ---------------------------------------------------------------- aggregation


def token_mean(loss: Tensor, mask: Tensor, max_new_tokens: int) -> Tensor:
    """Mean over every real token of the batch: sum_i sum_t l_it / sum_i |y_i| (DAPO, OpenRLHF).
    loss, mask: (B, T). Returns a scalar; long responses weigh in proportion to their length."""
    return masked_mean(loss, mask)


def seq_mean_token_mean(loss: Tensor, mask: Tensor, max_new_tokens: int) -> Tensor:
    """Mean over sequences of each sequence's token mean: (1/G) sum_i (1/|y_i|) sum_t l_it, as in
    the GRPO paper (Shao et al. 2024, eq. 3). loss, mask: (B, T). Sequences with no real token
    (all masked out) are left out of the mean. Returns a scalar."""
    has_tokens = mask.sum(1) > 0
    return masked_mean(masked_mean(loss, mask, dim=1), has_tokens)


def seq_mean_token_sum_norm(loss: Tensor, mask: Tensor, max_new_tokens: int) -> Tensor:
    """Dr. GRPO's unbiased aggregation (Liu et al. 2025, "Understanding R1-Zero-Like Training"):
    (1/G) sum_i (sum_t l_it) / L with the constant L = max_new_tokens, so no response's tokens are
    up- or down-weighted by its own length. loss, mask: (B, T). Sequences with no real token are
    left out of G. Returns a scalar."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    has_tokens = mask.sum(1) > 0
    return masked_mean(masked_sum(loss, mask, dim=1) / max_new_tokens, has_tokens)


# (per-token loss (B, T), mask (B, T), max_new_tokens) -> scalar
LOSS_AGGREGATIONS = {
    "token-mean": token_mean,
    "seq-mean-token-mean": seq_mean_token_mean,
    "seq-mean-token-sum-norm": seq_mean_token_sum_norm,
}


def aggregation_units(mask: Tensor, name: str) -> Tensor:
    """How many units the aggregation ``name`` averages over in ``mask`` (B, T): real tokens for
    token-mean, sequences with at least one real token otherwise (a scalar).

    A minibatch split into micro-batches gets the aggregate of the whole minibatch by weighting each
    micro-batch's aggregate by its share of the minibatch's units."""
    if name not in LOSS_AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {name!r}; one of {', '.join(LOSS_AGGREGATIONS)}")
    if name == "token-mean":
        return mask.sum()
    return (mask.sum(1) > 0).sum()
