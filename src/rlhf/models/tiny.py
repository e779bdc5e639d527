"""The embedded default: a byte-level BPE tokenizer trained on the bundled corpus and a small
Llama-architecture model (RoPE, RMSNorm, SwiGLU) built from a preset.

Both are ordinary `transformers` objects: once saved, every other stage loads them exactly like
a model downloaded from the Hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"
CHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
SPECIAL_TOKENS = (EOS, PAD, *CHAT_TOKENS)

# Each turn is `<|role|>\ncontent<|end|>`; the generation prompt opens an assistant turn, and a
# reply ends at `<|end|>` (the stop token of chat generation). The `generation` markers let
# transformers build assistant masks from the same template.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}<|assistant|>\n{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}"
    "{% else %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class Preset:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    max_positions: int


PRESETS = {
    # For tests: builds and trains in seconds.
    "tiny": Preset(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=192, max_positions=512),
    # For the demo: the largest model that reaches a good TinyStories perplexity in minutes on 2 CPU cores.
    "small": Preset(hidden_size=256, num_layers=6, num_heads=8, num_kv_heads=4, intermediate_size=704, max_positions=512),
}


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (GPT-2 style) with the chat special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(CHAT_TOKENS),
        model_max_length=PRESETS["small"].max_positions,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(preset: str, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A freshly initialised Llama model sized by `preset`, with ids matching `tokenizer`."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=p.hidden_size,
        intermediate_size=p.intermediate_size,
        num_hidden_layers=p.num_layers,
        num_attention_heads=p.num_heads,
        num_key_value_heads=p.num_kv_heads,
        max_position_embeddings=p.max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)
