"""Attention in fp32 under bf16 autocast, for CPUs.

On CPU, PyTorch's fused attention kernel is several times slower in bf16 than in fp32 at the
sizes of RL rollouts and updates (measured on this project's 2-core machine: forward + backward
of one layer, batch 32, 60 tokens: 60 ms in bf16, 17 ms in fp32; a one-token decoding step:
1.2 ms against 0.5 ms), while the matrix products around it are the other way round. So under
bf16 autocast the projections stay in bf16 and the attention itself runs in fp32 (which is
also the more accurate choice). On GPUs the bf16 flash kernels are the fast path: leave them.

    use_fp32_attention(model)   # registers "sdpa_fp32" with transformers and switches the model to it
"""

from __future__ import annotations

import torch

NAME = "sdpa_fp32"
_registered = False


def _decode_attention(query, key, value, attention_mask, scaling):
    """One query token per row, in fp32 with two batched matrix products: at decoding sizes the
    fused kernel's per-call overhead is most of its time.

    query (B, H, 1, D); key, value (B, KV, L, D) with H a multiple of KV (grouped-query attention);
    attention_mask None or (B, 1, 1, L) bool (True = attend) or additive float.
    Returns (B, 1, H, D), the layout transformers' attention functions return.
    """
    b, h, _, d = query.shape
    kv, length = key.shape[1], key.shape[2]
    q = query.float().reshape(b * kv, h // kv, d)
    scores = torch.bmm(q, key.float().reshape(b * kv, length, d).transpose(1, 2)).view(b, kv, h // kv, length)
    scores = scores * scaling
    if attention_mask is not None:
        mask = attention_mask[..., -length:].reshape(b, 1, 1, length)
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    probs = torch.softmax(scores, dim=-1).view(b * kv, h // kv, length)
    out = torch.bmm(probs, value.float().reshape(b * kv, length, d))
    return out.view(b, h, 1, d).transpose(1, 2)


def _sdpa_fp32(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' SDPA attention with q, k, v in fp32 and autocast off; output in the query's dtype.
    Single-token decoding steps (no dropout) take `_decode_attention`."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    dtype = query.dtype
    with torch.autocast(query.device.type, enabled=False):
        plain = dropout == 0.0 and not any(kwargs.get(k) is not None for k in ("position_bias", "softcap", "sliding_window"))
        if plain and query.shape[2] == 1 and query.shape[1] % key.shape[1] == 0 \
                and (attention_mask is None or attention_mask.shape[-2] == 1):
            scale = scaling if scaling is not None else query.shape[-1] ** -0.5
            return _decode_attention(query, key, value, attention_mask, scale).to(dtype), None
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                              scaling=scaling, dropout=dropout, **kwargs)
    return out.to(dtype), weights


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, _sdpa_fp32)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    _registered = True


def use_fp32_attention(model) -> bool:
    """Switch a Hugging Face model (peft-wrapped or not) on a CPU from "sdpa" to "sdpa_fp32".

    Returns True if switched; models on other devices, with another attention implementation or
    that cannot change it are left as they are (False). The numbers only change by the rounding
    of attention (fp32 instead of bf16 under autocast; identical in fp32).
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(inner, "config", None)
    try:
        device = next(inner.parameters()).device
    except StopIteration:
        return False
    if config is None or device.type != "cpu" or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    _register()
    try:
        inner.set_attn_implementation(NAME)
    except (ValueError, AttributeError, NotImplementedError):
        return False
    return getattr(inner.config, "_attn_implementation", None) == NAME
