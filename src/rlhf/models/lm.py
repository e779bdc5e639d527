"""The LM forward restricted to the positions a loss reads, and the LM losses of pretraining and SFT.

The LM head runs only where a loss is taken: hidden states of the positions whose next token is
a target are gathered first, and only those rows are projected onto the vocabulary. Prompt and
padding positions never materialise logits, which on small-vocabulary-heavy models is a large
share of the step (and of its memory).
"""

from __future__ import annotations

import torch

from ..algos.sft import masked_cross_entropy


def backbone_and_head(model):
    """The transformer body and the output projection of a Hugging Face causal LM (peft-wrapped or not).

    Returns (None, None) for models whose logits need more than the projection (soft-capping,
    logit scaling), which then go through the full forward.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = inner.config
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None, None
    head = inner.get_output_embeddings()
    body = getattr(inner, inner.base_model_prefix, None)
    if head is None or body is None:
        return None, None
    return body, head


def target_logits(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, V) at the N positions whose next token is a target, and those targets (N,).

    batch: input_ids (B, T), loss_mask (B, T) marking target tokens, optional attention_mask /
    position_ids (B, T).
    """
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    targets = batch["loss_mask"][:, 1:].bool()  # position t predicts token t + 1
    labels = batch["input_ids"][:, 1:][targets]
    body, head = backbone_and_head(model)
    if body is None:
        logits = model(**inputs, use_cache=False).logits
        return logits[:, :-1][targets], labels
    hidden = body(**inputs, use_cache=False).last_hidden_state
    return head(hidden[:, :-1][targets]), labels


def lm_loss_sum(model, batch: dict) -> tuple[torch.Tensor, dict]:
    """Summed next-token cross-entropy over the target tokens of a batch."""
    logits, labels = target_logits(model, batch)
    mean, n_tokens = masked_cross_entropy(logits[None], labels[None], torch.ones_like(labels)[None])
    return mean * n_tokens, {}


def dense_lm_loss_sum(model, batch: dict) -> tuple[torch.Tensor, dict]:
    """Summed next-token cross-entropy when every token is a target (pretraining blocks).

    Goes through the model's own forward, so a torch.compile'd model fuses head and loss.
    batch: input_ids (B, T).
    """
    logits = model(input_ids=batch["input_ids"], use_cache=False).logits[:, :-1]
    labels = batch["input_ids"][:, 1:]
    mean, n_tokens = masked_cross_entropy(logits, labels, torch.ones_like(labels))
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
