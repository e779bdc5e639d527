"""Language-model losses and scoring shared by pretraining and SFT."""

from __future__ import annotations

import torch

from ..algos.sft import masked_cross_entropy, shift_for_next_token


def lm_loss_sum(model, batch: dict) -> tuple[torch.Tensor, dict]:
    """Summed next-token cross-entropy over `loss_mask` tokens of a batch.

    batch: input_ids (B, T), loss_mask (B, T), optional attention_mask / position_ids (B, T).
    """
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    logits = model(**inputs, use_cache=False).logits
    logits, labels, mask = shift_for_next_token(logits, batch["input_ids"], batch["loss_mask"])
    mean, n_tokens = masked_cross_entropy(logits, labels, mask)
    return mean * n_tokens, {}


@torch.no_grad()
def score_nll(model, batches, device, autocast_ctx) -> tuple[float, int]:
    """Total next-token NLL (nats) and number of scored tokens over an iterable of batches."""
    nll, count = 0.0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        with autocast_ctx():
            loss_sum, _ = lm_loss_sum(model, batch)
        nll += float(loss_sum)
        count += int(batch["loss_mask"][:, 1:].sum())
    return nll, count
