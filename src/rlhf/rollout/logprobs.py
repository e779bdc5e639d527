"""Scoring a Rollout under a model: the log-probabilities (and entropies) of its response tokens.

The forward pass uses the sampler's layout (prompts left-padded, position ids counting real
tokens only), so on the sampling model it reproduces the sampler's log-probabilities; the
language-model head runs on response positions only.
"""

from __future__ import annotations

from torch import Tensor

from ..algos.logprobs import entropy_from_logits, token_logprobs
from ..data.records import Rollout
from ..models.lm import backbone_and_head


def response_logits(model, rollout: Rollout, temperature: float = 1.0) -> Tensor:
    """Logits (B, T, V) at the positions that produced each response token, divided by the
    sampling temperature (0, greedy, counts as 1)."""
    tokens, mask = rollout.tokens, rollout.attention_mask
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    start = rollout.prompt_ids.shape[1] - 1
    body, head = backbone_and_head(model)
    if body is None:
        logits = model(input_ids=tokens, attention_mask=mask, position_ids=positions, use_cache=False).logits[:, start:-1]
    else:
        hidden = body(input_ids=tokens, attention_mask=mask, position_ids=positions, use_cache=False).last_hidden_state
        logits = head(hidden[:, start:-1])
    return logits / temperature if temperature not in (0.0, 1.0) else logits


def response_logprobs(model, rollout: Rollout, temperature: float = 1.0, with_entropy: bool = False):
    """log pi (B, T) fp32 of the response tokens, 0 on padding; differentiable.
    With `with_entropy`, also the (B, T) entropy of pi at each response position (detached)."""
    logits = response_logits(model, rollout, temperature)
    chunk = max(1, logits.shape[0] // 4)
    logp = token_logprobs(logits, rollout.response_ids, chunk_size=chunk) * rollout.response_mask
    if not with_entropy:
        return logp
    return logp, entropy_from_logits(logits.detach(), chunk_size=chunk) * rollout.response_mask
