"""Importance-sampling corrections for the gap between the sampler and the trainer.

The sampler (a KV-cache decode in bf16, an inference engine such as vLLM, an older copy of the
policy in asynchronous RL) computes log-probs that differ from the trainer's forward on the same
tokens, so the samples come from pi_sampler, not the pi_old the update's ratio assumes. Truncated
importance sampling (Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy
RL training"; TRL's `vllm_importance_sampling_correction`, verl's `rollout_is`) reweights each
token's policy-gradient term by

    w_t = min(pi_old(y_t) / pi_sampler(y_t), C)        (token level, detached)

and the sequence-level masked variant keeps a whole sequence (weight 1) only when its ratio
prod_t pi_old(y_t) / pi_sampler(y_t) lies in [1/C, C], dropping it (weight 0) otherwise.

Shapes: old_logp, sampler_logp, mask (B, T) over response tokens, mask 1 on real tokens. The
weights carry no gradient: they correct which distribution the samples came from, not the policy.
"""


import torch
from torch import Tensor


def token_is_weights(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor, cap: float) -> Tensor:
    """min(exp(old_logp - sampler_logp), cap) per token, 0 on padding. Returns (B, T), detached."""
    ratio = torch.exp((old_logp - sampler_logp).detach() * mask)
    return ratio.clamp(max=cap) * mask


def sequence_is_weights(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor, cap: float) -> Tensor:
    """1 on every token of a sequence whose ratio exp(sum_t (old_logp - sampler_logp)) lies in
    [1/cap, cap], 0 on the tokens of the others and on padding. Returns (B, T), detached."""
    log_ratio = ((old_logp - sampler_logp).detach() * mask).sum(dim=1)  # (B,)
    bound = torch.log(torch.tensor(cap, dtype=log_ratio.dtype, device=log_ratio.device))
    keep = (log_ratio.abs() <= bound).to(mask.dtype)
    return keep[:, None] * mask


# level -> (old_logp, sampler_logp, mask, cap) -> weights (B, T)
IS_CORRECTIONS = {"token": token_is_weights, "sequence": sequence_is_weights}


def is_correction_stats(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor, cap: float) -> dict[str, Tensor]:
    """What the gap looks like, over the real tokens of the batch (scalars, detached):
    gap_mean and gap_max of |log pi_old - log pi_sampler|, capped_share (tokens whose ratio passes
    `cap`) and dropped_share (sequences whose ratio leaves [1/cap, cap])."""
    gap = (old_logp - sampler_logp).detach() * mask
    tokens = mask.sum().clamp(min=1)
    sequences = (mask.sum(dim=1) > 0).sum().clamp(min=1)
    bound = torch.log(torch.tensor(cap, dtype=gap.dtype, device=gap.device))
    return {
        "gap_mean": gap.abs().sum() / tokens,
        "gap_max": gap.abs().max() if gap.numel() else gap.new_zeros(()),
        "capped_share": ((gap > bound) & mask.bool()).sum() / tokens,
        "dropped_share": ((gap.sum(dim=1).abs() > bound) & (mask.sum(dim=1) > 0)).sum() / sequences,
    }
