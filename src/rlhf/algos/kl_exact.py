"""The exact KL between two next-token distributions, for measuring KL(pi || ref) where people read it.

The sampled estimators of `rlhf.algos.kl` look at one token per position: k1 = log pi(y) -
log ref(y) is unbiased but negative whenever the sampled token is likelier under ref, so a mean
over few samples of a policy close to ref often comes out below zero; k3 is never negative, but
its variance grows with exp(log ref - log pi) when the policy has moved far (a rare token the
reference favours). When both models' logits are at hand the per-position expectation can be
taken exactly over the vocabulary instead:

    KL_t = sum_v pi(v | y_<t) (log pi(v | y_<t) - log ref(v | y_<t))  >= 0

Summed over the positions of a response sampled from pi, this is an unbiased estimate of the
sequence-level KL(pi(y|x) || ref(y|x)) (chain rule: E[k1_t | y_<t] = KL_t), never negative, and of
lower variance than k1 or k3 (it is k1 with the sampled token averaged out).
"""

import torch
from torch import Tensor


def exact_token_kl(logits: Tensor, ref_logits: Tensor, chunk_size: int = 8) -> Tensor:
    """KL(softmax(logits) || softmax(ref_logits)) at every position.

    logits, ref_logits: (B, T, V), any float dtype (temperature already applied). Returns (B, T)
    fp32, >= 0. Rows are upcast to fp32 `chunk_size` at a time, so the extra memory is that of
    `chunk_size` rows, not of the batch.
    """
    if logits.shape != ref_logits.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and ref_logits {tuple(ref_logits.shape)} differ in shape")
    out = torch.empty(logits.shape[:-1], dtype=torch.float32, device=logits.device)
    for start in range(0, logits.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        logp = torch.log_softmax(logits[rows].float(), dim=-1)
        ref_logp = torch.log_softmax(ref_logits[rows].float(), dim=-1)
        # rounding can leave a tiny negative sum where the two distributions are equal
        out[rows] = (logp.exp() * (logp - ref_logp)).sum(-1).clamp(min=0)
    return out
