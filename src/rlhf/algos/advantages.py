"""Advantage estimators: GAE for PPO, discounted returns, group baselines for RLOO and GRPO, and
REINFORCE++'s globally normalised returns.

Per-token tensors are (B, T) over response tokens, right-padded: ``mask`` is 1 on a prefix of
each row. Per-sequence rewards for group methods are (B,), laid out as B // k groups of k
consecutive samples of the same prompt.
"""

import torch
from torch import Tensor

from rlhf.algos.masked import SumAcross, whiten


def gae(
    values: Tensor, rewards: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over response tokens.

    values: (B, T) V(s_t) from the critic; rewards: (B, T) per-token reward; mask: (B, T), 1 on a
    prefix of each row (the real response tokens).
    Returns advantages (B, T) and returns = advantages + values (B, T), both 0 where mask is 0.
    The episode ends after the last real token, so the value after it is 0. No whitening here:
    the caller decides.
        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t     = delta_t + gamma * lam * A_{t+1}
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    # Shifting the mask left marks "t + 1 is still inside the response"; beyond it V and A are 0.
    next_is_real = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1) * next_is_real
    deltas = rewards + gamma * next_values - values

    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        running = deltas[:, t] + gamma * lam * next_is_real[:, t] * running
        advantages[:, t] = running
    advantages = advantages * mask
    returns = (advantages + values) * mask
    return advantages, returns


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Reward-to-go G_t = r_t + gamma * G_{t+1} over response tokens (Sutton & Barto 2018, ch. 3).

    rewards, mask: (B, T), mask 1 on a prefix of each row. Returns (B, T), 0 where mask is 0.
    Equals GAE with V = 0 and lam = 1.
    """
    mask = mask.to(rewards.dtype)
    rewards = rewards * mask
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    return returns * mask


def _groups(rewards: Tensor, k: int) -> Tensor:
    if rewards.dim() != 1 or rewards.shape[0] % k:
        shape = tuple(rewards.shape)
        raise ValueError(f"rewards must be (B,) with B divisible by k={k}, got {shape}")
    return rewards.view(-1, k)


def rloo_baseline(rewards: Tensor, k: int) -> Tensor:
    """Leave-one-out baseline of REINFORCE Leave-One-Out (Kool et al. 2019; Ahmadian et al. 2024).

    rewards: (B,), B // k groups of k consecutive samples for the same prompt; k >= 2.
    Returns (B,): for each sample, the mean reward of the other k - 1 samples of its group.
    """
    if k < 2:
        raise ValueError(f"RLOO needs k >= 2 samples per prompt, got k={k}")
    grouped = _groups(rewards, k)
    others_sum = grouped.sum(dim=1, keepdim=True) - grouped
    return (others_sum / (k - 1)).reshape(-1)


def rloo_advantages(rewards: Tensor, k: int) -> Tensor:
    """RLOO advantages r_i - mean_{j != i} r_j (Ahmadian et al. 2024).

    rewards: (B,) as for ``rloo_baseline``. Returns (B,).
    """
    return rewards - rloo_baseline(rewards, k)


def grpo_advantages(
    rewards: Tensor, k: int, scale_by_std: bool = True, eps: float = 1e-4
) -> Tensor:
    """Group-relative advantages of GRPO (Shao et al. 2024, DeepSeekMath).

    rewards: (B,), B // k groups of k consecutive samples for the same prompt.
    Returns (B,): (r - group mean) / (group std + eps), the std being the unbiased sample std
    (as in TRL); with ``scale_by_std=False`` only the mean is removed, as Dr. GRPO
    (Liu et al. 2025) recommends to avoid up-weighting near-unanimous groups.
    """
    if k < 2:
        raise ValueError(f"GRPO needs k >= 2 samples per prompt, got k={k}")
    grouped = _groups(rewards, k)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_by_std:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    return centred.reshape(-1)


def reinforce_pp_advantages(rewards: Tensor, mask: Tensor, gamma: float = 1.0, eps: float = 1e-8,
                            sum_across: SumAcross = None) -> Tensor:
    """REINFORCE++ advantages (Hu 2025, "REINFORCE++: An Efficient RLHF Algorithm with Robustness
    to Both Prompt and Reward Models"): the return-to-go with no baseline and no critic, normalised
    over the whole batch.

    rewards: (B, T) per-token reward (typically -beta * KL_t on every token plus the sequence
    score on the last one; for REINFORCE++-baseline the score minus its group mean); mask: (B, T).
        G_t = sum_{s >= t} gamma^(s - t) r_s
        A_t = (G_t - mean(G)) / std(G)     mean and std over every real token of the batch
    Normalising over the global batch rather than the prompt's group is what keeps it stable
    against prompts whose rewards are all alike. Returns (B, T), 0 where mask is 0. With
    ``sum_across`` (rlhf.algos.masked.SumAcross) the batch is the union of every process's rows.
    """
    returns = discounted_returns(rewards, mask, gamma)
    return whiten(returns, mask, eps=eps, sum_across=sum_across) * mask.to(returns.dtype)
