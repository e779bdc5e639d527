"""Next-token cross-entropy over the tokens a stage trains on (pretraining, SFT, ORPO's NLL term).

Standard maximum-likelihood language modelling (Radford et al. 2018); for SFT the loss mask is 1
on the completion only, as in InstructGPT (Ouyang et al. 2022).
"""

from torch import Tensor

from rlhf.algos.logprobs import token_logprobs
from rlhf.algos.masked import masked_sum


def shift_for_next_token(
    logits: Tensor, input_ids: Tensor, loss_mask: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Align the prediction at position t with the token at t + 1.

    logits: (B, T, V); input_ids, loss_mask: (B, T), loss_mask marking the tokens to predict.
    Returns logits[:, :-1] (B, T-1, V), labels = input_ids[:, 1:] (B, T-1) and
    loss_mask[:, 1:] (B, T-1). Views, no copies.
    """
    return logits[:, :-1], input_ids[:, 1:], loss_mask[:, 1:]


def masked_cross_entropy(
    logits: Tensor, labels: Tensor, loss_mask: Tensor
) -> tuple[Tensor, Tensor]:
    """Mean negative log-likelihood of ``labels`` over tokens with ``loss_mask`` == 1.

    logits: (B, T, V), already aligned with labels (the caller shifts: ``shift_for_next_token``);
    labels: (B, T) int64, may hold any value (e.g. -100) where loss_mask is 0;
    loss_mask: (B, T) 0/1.
    Returns (loss, n_tokens): loss a scalar (0 when no token counts), n_tokens a scalar int64
    tensor. For gradient accumulation weighted by tokens, use loss * n_tokens / total_tokens.
    """
    keep = loss_mask.bool()
    # Masked-out labels may be ignore indices; any valid class index works since they are dropped.
    safe_labels = labels.masked_fill(~keep, 0)
    nll = -token_logprobs(logits, safe_labels)
    n_tokens = keep.sum()
    loss = masked_sum(nll, keep) / n_tokens.clamp(min=1)
    return loss, n_tokens.detach()
