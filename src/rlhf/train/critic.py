"""The critic of PPO: V(s_t) at every response token, initialised from the reward model.

A reward model saved by `rlhf rm` is a `*ForSequenceClassification`: a transformer body and a
linear `score` head read at the last real token. The critic is the same body with the head read
at every position (InstructGPT; Ziegler et al. 2019), so at step 0 it already predicts, from each
prefix, what the reward model would say. Its head is rescaled by the reward model's stored mean
and std, so that it predicts the normalised score the policy is rewarded with.

The critic reads the policy's token ids, so the reward model must share the policy's tokenizer
(true when it was trained from the SFT model, as in the demo). Otherwise, or when the reward is a
Python callable, the critic starts from the policy's own body with a zero head (V = 0).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..models.reward import REWARD_MEAN, REWARD_STD, disable_dropout, load_reward_backbone
from ..rollout.attention import use_fp32_attention


class ValueModel(nn.Module):
    """Per-token values: a Hugging Face transformer body and a linear head on every position."""

    def __init__(self, body: nn.Module, head: nn.Linear, config):
        super().__init__()
        self.body, self.head, self.config = body, head, config

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
        """input_ids, attention_mask, position_ids: (B, L) -> values (B, L) in fp32."""
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                           use_cache=False).last_hidden_state
        # a tensor of its own, not a view of the head's output: FSDP2 hooks a unit's output for its
        # backward, and warns (an in-place op on a view would drop the hook) when it is a view
        return self.head(hidden).squeeze(-1).float().clone()


def same_vocabulary(tokenizer_a, tokenizer_b) -> bool:
    return tokenizer_a.get_vocab() == tokenizer_b.get_vocab()


def build_critic(init_dir: str | Path, policy_tokenizer, trust_remote_code: bool = False,
                 normalize: bool = True) -> ValueModel:
    """A ValueModel from `init_dir`: a reward model (head kept; rescaled to (r - mean) / std with
    its stored statistics when `normalize`, as the policy's reward is) or a causal LM (fresh zero
    head). Raises ValueError if its tokenizer differs from the policy's or it is an encoder (pair
    format), whose positions cannot be aligned with the policy's tokens."""
    model, tokenizer, input_format = load_reward_backbone(init_dir, trust_remote_code=trust_remote_code)
    if input_format != "causal":
        raise ValueError(f"critic init {init_dir}: an encoder ({input_format} format) cannot value the policy's tokens; "
                         "pass --critic with a causal model that shares the policy's tokenizer")
    if not same_vocabulary(tokenizer, policy_tokenizer):
        raise ValueError(f"critic init {init_dir}: its tokenizer differs from the policy's; "
                         "pass --critic with a model that shares the policy's tokenizer")
    disable_dropout(model)
    use_fp32_attention(model)  # CPU only: see rlhf.rollout.attention
    body = getattr(model, model.base_model_prefix)
    score: nn.Linear = model.score
    head = nn.Linear(score.in_features, 1, bias=True)
    config = model.config
    mean, std = getattr(config, REWARD_MEAN, None), getattr(config, REWARD_STD, None)
    with torch.no_grad():
        if mean is None or std is None:  # not a trained reward model: start from V = 0
            head.weight.zero_()
            head.bias.zero_()
        else:
            mean, std = (float(mean), float(std) if float(std) > 0 else 1.0) if normalize else (0.0, 1.0)
            bias = score.bias if score.bias is not None else torch.zeros(1)
            head.weight.copy_(score.weight / std)
            head.bias.copy_((bias - mean) / std)
    return ValueModel(body, head, config)


def response_values(critic: ValueModel, tokens: Tensor, attention_mask: Tensor, prompt_len: int) -> Tensor:
    """V(s_t) for each response token t: the value of the prefix before it.

    tokens, attention_mask: (B, P + T), prompts left-padded to P. Returns (B, T) fp32.
    """
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    values = critic(tokens, attention_mask, positions)
    return values[:, prompt_len - 1 : -1]
