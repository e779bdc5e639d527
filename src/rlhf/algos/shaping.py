"""Reward shaping and sample selection of DAPO (Yu et al. 2025): the soft overlong penalty,
masking truncated responses out of the loss, and the group filter of dynamic sampling.

Per-sequence tensors are (B,), laid out as B // k groups of k consecutive samples of the same
prompt; per-token tensors (B, T) with ``mask`` 1 on real response tokens.
"""


import torch
from torch import Tensor


def overlong_penalty(lengths: Tensor, max_new_tokens: int, buffer: int, penalty: float = 1.0) -> Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), to add to the reward.

    lengths: (B,) response lengths in tokens. With L = max_new_tokens and the buffer of the last
    ``buffer`` tokens before it:
        0                                         if |y| <= L - buffer
        (L - buffer - |y|) / buffer * penalty     if L - buffer < |y| <= L  (linear from 0 to -penalty)
        -penalty                                  if |y| > L
    Returns (B,) float, <= 0. buffer 0 is off (all zeros).
    """
    if buffer < 0 or buffer > max_new_tokens:
        raise ValueError(f"buffer must be in [0, max_new_tokens={max_new_tokens}], got {buffer}")
    lengths = lengths.float()
    if buffer == 0:
        return torch.zeros_like(lengths)
    start = max_new_tokens - buffer
    inside = (start - lengths) / buffer * penalty
    return inside.clamp(min=-penalty, max=0.0)


def truncation_mask(mask: Tensor, ended: Tensor) -> Tensor:
    """The loss mask without the responses that never reached EOS (truncated at max_new_tokens):
    their last tokens are cut mid-thought, so their reward says little about them (DAPO's overlong
    filtering). mask: (B, T); ended: (B,) bool. Returns (B, T) of mask's dtype."""
    return mask * ended.to(mask.dtype)[:, None]


def informative_groups(rewards: Tensor, k: int) -> Tensor:
    """Dynamic sampling's filter: which groups' rewards are not all equal (DAPO, eq. 11).

    rewards: (B,), B // k groups of k consecutive samples of the same prompt. Returns (B // k,)
    bool. A group whose k rewards are all equal (all right, or all wrong) has zero advantage
    under a group baseline and gives no gradient, so it is dropped and replaced."""
    if rewards.dim() != 1 or k < 1 or rewards.shape[0] % k:
        raise ValueError(f"rewards must be (B,) with B divisible by k={k}, got {tuple(rewards.shape)}")
    grouped = rewards.view(-1, k)
    return grouped.amax(dim=1) != grouped.amin(dim=1)
