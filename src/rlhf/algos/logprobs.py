"""Token log-probabilities and entropies from language-model logits, without a full fp32 copy.

A (B, T, V) logit tensor is the largest activation of an RLHF step (V is 32k-150k), and
``log_softmax(logits.float())`` doubles or triples it. Here only one chunk of rows is upcast at a
time, and the backward pass recomputes the softmax from the saved logits, the approach of
TRL's ``selective_log_softmax`` and Liger's fused linear cross-entropy.
"""

import torch
from torch import Tensor

from rlhf.algos.masked import masked_mean, masked_sum


def _compute_dtype(logits: Tensor) -> torch.dtype:
    # bf16/fp16 logsumexp over tens of thousands of classes loses ~2 digits; never go below fp32.
    return torch.promote_types(logits.dtype, torch.float32)


class _GatherLogSoftmax(torch.autograd.Function):
    """log_softmax(logits)[labels], saving only the input logits and a (B, T) logsumexp."""

    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, chunk_size: int) -> Tensor:
        dtype = _compute_dtype(logits)
        logps = torch.empty(labels.shape, dtype=dtype, device=logits.device)
        logsumexp = torch.empty_like(logps)
        for start in range(0, logits.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            chunk = logits[rows].to(dtype)
            logsumexp[rows] = torch.logsumexp(chunk, dim=-1)
            picked = chunk.gather(-1, labels[rows].unsqueeze(-1)).squeeze(-1)
            logps[rows] = picked - logsumexp[rows]
        ctx.save_for_backward(logits, labels, logsumexp)
        ctx.chunk_size = chunk_size
        return logps

    @staticmethod
    def backward(ctx, grad_logps: Tensor):
        logits, labels, logsumexp = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.chunk_size):
            rows = slice(start, start + ctx.chunk_size)
            upstream = grad_logps[rows].unsqueeze(-1)
            # d log p_y / d z = onehot(y) - softmax(z); softmax rebuilt from the saved logsumexp.
            grad = (logits[rows].to(logsumexp.dtype) - logsumexp[rows].unsqueeze(-1)).exp_()
            grad.mul_(-upstream)
            grad.scatter_add_(-1, labels[rows].unsqueeze(-1), upstream)
            grad_logits[rows] = grad.to(grad_logits.dtype)
        return grad_logits, None, None


def token_logprobs(logits: Tensor, labels: Tensor, chunk_size: int = 1) -> Tensor:
    """log softmax(logits)[label] at every position.

    logits: (B, T, V), any float dtype; labels: (B, T) int64, every entry a valid class index
    (replace ignore indices such as -100 before calling; mask the result instead).
    Returns (B, T) in fp32 (fp64 if the logits are fp64). Differentiable.

    Computed as logit[label] - logsumexp(logits) over ``chunk_size`` rows of the batch at a
    time, so peak extra memory is one upcast chunk of (chunk_size, T, V), not (B, T, V).
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree")
    return _GatherLogSoftmax.apply(logits, labels, chunk_size)


def sequence_logprobs(token_logps: Tensor, mask: Tensor, average: bool = False) -> Tensor:
    """Log-probability of each sequence from its token log-probabilities.

    token_logps, mask: (B, T); mask = 1 on the tokens that belong to the response.
    Returns (B,): the sum over masked tokens (log pi(y|x), as in DPO, Rafailov et al. 2023), or
    with ``average`` the mean (the length-normalised form of SimPO, Meng et al. 2024, and ORPO).
    """
    if average:
        return masked_mean(token_logps, mask, dim=-1)
    return masked_sum(token_logps, mask, dim=-1)


def entropy_from_logits(logits: Tensor, chunk_size: int = 1) -> Tensor:
    """Entropy of the next-token distribution at each position.

    logits: (B, T, V). Returns (B, T) in fp32 (fp64 for fp64 logits); H = -sum_v p_v log p_v.
    Upcasts ``chunk_size`` rows at a time. Meant for logging and entropy bonuses
    (Mnih et al. 2016); under autograd each chunk's fp32 softmax is kept for backward.
    """
    dtype = _compute_dtype(logits)
    entropies = []
    for start in range(0, logits.shape[0], chunk_size):
        logp = torch.log_softmax(logits[start : start + chunk_size].to(dtype), dim=-1)
        entropies.append(-(logp.exp() * logp).sum(-1))
    return torch.cat(entropies, dim=0)
