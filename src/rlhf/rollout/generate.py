"""Batched sampling with a KV cache: the hot path of online RL (PPO, RLOO, GRPO, online DPO).

`generate` takes token ids of prompts of different lengths, left-pads them into one batch and
decodes all rows together, one forward pass per new token over the cached keys and values
(Hugging Face `DynamicCache`). Position ids count real tokens only, so a left-padded row sees
exactly the positions it would see alone, and a later training forward over
`Rollout.tokens` with `Rollout.attention_mask` reproduces the sampler's numbers.

Log-probabilities are those of the tempered policy, log softmax(logits / temperature), over the
whole vocabulary: top-k and top-p shape which token is drawn, not the returned log-probability
(as TRL and OpenRLHF do), so the policy a trainer optimises is the one whose log-probs it
recomputes. With temperature 0 decoding is greedy and the log-probs are those at temperature 1.

`sample_responses` is the text-level helper: prompts in, k decoded responses per prompt out.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..data.collate import pad_left
from ..data.records import PromptText, Rollout

# End-of-turn markers of common chat templates (ours, ChatML, Llama 3, Gemma): generation stops
# at them as at EOS when the tokenizer has them.
END_OF_TURN_TOKENS = ("<|end|>", "<|im_end|>", "<|eot_id|>", "<end_of_turn>")


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample. Validated on construction."""

    max_new_tokens: int = 64  # response tokens at most (a response that hits it has not ended)
    temperature: float = 1.0  # softmax temperature; 0 = greedy
    top_k: int = 0  # sample among the k most likely tokens; 0 = all
    top_p: float = 1.0  # nucleus sampling: smallest set of tokens with this much probability; 1 = all

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """The ids generation stops at: the tokenizer's EOS, the model's generation-config EOS ids,
    and the chat end-of-turn token when the vocabulary has one."""
    ids = {tokenizer.eos_token_id}
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(config_eos if isinstance(config_eos, (list, tuple)) else [config_eos])
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    return sorted(i for i in ids if i is not None)


def _filter_logits(logits: Tensor, top_k: int, top_p: float) -> Tensor:
    """Set logits outside the top-k / nucleus to -inf. logits: (B, V) -> (B, V)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the tokens before it already hold top_p; the first is always kept
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _position_ids(mask: Tensor) -> Tensor:
    """Positions counting real tokens only: (B, L) 0/1 mask -> (B, L), 0 on left padding."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def generate(
    model,
    prompt_ids: Sequence[Sequence[int]],
    sampling: SamplingConfig,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    generator: torch.Generator | None = None,
    row_seeds: Sequence[int] | None = None,
) -> Rollout:
    """Sample one response per prompt with a KV cache.

    model: a Hugging Face causal LM (peft-wrapped or not); run it under the autocast the caller
    wants (on CPU under bf16, `rlhf.rollout.attention.use_fp32_attention(model)` first is faster). prompt_ids: B lists of token ids, any lengths >= 1. Generation stops per row at any of
    `eos_token_ids` (kept as the last response token) and for the batch when every row has
    stopped or `sampling.max_new_tokens` tokens are out. `generator` (on the model's device)
    makes sampling reproducible. `row_seeds` (B ints) instead gives each row its own random
    stream (`row_uniforms`): a row's sample then depends on its prompt and seed alone, not on
    the other rows of the batch, so a batch split among processes samples what it samples whole.
    Returns a Rollout: prompt_ids / prompt_mask (B, P) left-padded; response_ids (B, T) padded
    with `pad_token_id` after the stop token; response_mask (B, T) 1 up to and including it;
    logprobs (B, T) of the sampled tokens under log softmax(logits / temperature), 0 on padding;
    ended (B,) True where the response reached a stop token. T <= max_new_tokens.
    """
    if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
        raise ValueError("generate needs at least one prompt and every prompt needs at least one token")
    device = next(model.parameters()).device
    prompts = pad_left(prompt_ids, pad_token_id).to(device)
    prompt_mask = pad_left([[1] * len(p) for p in prompt_ids], 0).to(device)
    batch, prompt_len = prompts.shape
    max_new = sampling.max_new_tokens
    stops = torch.tensor(sorted(set(eos_token_ids)), device=device)
    # One preallocated mask for prompt + all new tokens; each step reads a growing prefix of it.
    full_mask = torch.cat([prompt_mask, prompt_mask.new_ones(batch, max_new)], dim=1)
    next_position = prompt_mask.sum(-1, keepdim=True)  # (B, 1) position of the first new token

    tokens = torch.full((batch, max_new), pad_token_id, dtype=torch.long, device=device)
    logprobs = torch.zeros(batch, max_new, dtype=torch.float32, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    uniforms = None if row_seeds is None else row_uniforms(row_seeds, max_new).to(device)  # (B, max_new)
    was_training = model.training
    model.eval()
    cache = _new_cache(model, prompt_len + max_new)
    inputs = {"input_ids": prompts, "position_ids": _position_ids(prompt_mask)}
    length = prompt_len
    steps = 0
    try:
        for t in range(max_new):
            out = model(**inputs, attention_mask=full_mask[:, :length], past_key_values=cache,
                        use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            token, logp = _sample(out.logits[:, -1], sampling, generator, None if uniforms is None else uniforms[:, t])
            token = token.masked_fill(done, pad_token_id)
            tokens[:, t] = token
            logprobs[:, t] = logp.masked_fill(done, 0.0)
            steps = t + 1
            done = done | torch.isin(token, stops)
            # one host sync per token; it also lets the batch stop as soon as every row has
            if bool(done.all()):
                break
            inputs = {"input_ids": token[:, None], "position_ids": next_position + t}
            length += 1
    finally:
        model.train(was_training)

    tokens, logprobs = tokens[:, :steps], logprobs[:, :steps]
    is_stop = torch.isin(tokens, stops)
    # 1 up to and including the first stop token: no stop token strictly before this position
    stops_before = torch.cumsum(is_stop.long(), dim=1) - is_stop.long()
    response_mask = (stops_before == 0).long()
    tokens = tokens.masked_fill(response_mask == 0, pad_token_id)
    logprobs = logprobs * response_mask
    return Rollout(prompt_ids=prompts, prompt_mask=prompt_mask, response_ids=tokens,
                   response_mask=response_mask, logprobs=logprobs, ended=is_stop.any(dim=1))


def _new_cache(model, capacity: int):
    """A KV cache for `capacity` positions: preallocated buffers written in place (no per-token
    concatenation, which otherwise copies the whole cache at every step and dominates decoding
    time), for models whose layers all use full attention; HF's DynamicCache for the others."""
    from transformers import DynamicCache
    from transformers.cache_utils import Cache, DynamicLayer

    config = getattr(model, "config", None)
    text_config = config.get_text_config(decoder=True) if config is not None else None
    layer_types = getattr(text_config, "layer_types", None)
    if layer_types is not None and any(t != "full_attention" for t in layer_types):
        return DynamicCache(config=config)

    class PreallocatedLayer(DynamicLayer):
        """DynamicLayer semantics (keys/values are exactly the tokens seen so far), as views of
        one buffer of `capacity` positions."""

        def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
            self.dtype, self.device = key_states.dtype, key_states.device
            b, h, _, d = key_states.shape
            self._key_buffer = key_states.new_empty(b, h, capacity, d)
            self._value_buffer = value_states.new_empty(b, h, capacity, value_states.shape[-1])
            self.keys, self.values = self._key_buffer[:, :, :0], self._value_buffer[:, :, :0]
            self.is_initialized = True

        def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            start = self.keys.shape[-2]
            end = start + key_states.shape[-2]
            self._key_buffer[:, :, start:end] = key_states
            self._value_buffer[:, :, start:end] = value_states
            self.keys, self.values = self._key_buffer[:, :, :end], self._value_buffer[:, :, :end]
            return self.keys, self.values

    return Cache(layer_class_to_replicate=PreallocatedLayer)


def hashed_row_seeds(key: Sequence[int], rows: Sequence[int]) -> list[int]:
    """A 63-bit seed for each row index in `rows` under `key` (e.g. (seed, step, round)): a hash of
    both, so no two rows of a run share a random stream and a row's seed does not depend on which
    process samples it or beside which other rows."""
    prefix = "/".join(str(int(part)) for part in key)

    def one(row: int) -> int:
        digest = hashlib.blake2b(f"{prefix}/{row}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") & (2**63 - 1)

    return [one(row) for row in rows]


def row_uniforms(row_seeds: Sequence[int], n: int) -> Tensor:
    """(B, n) fp32 uniform numbers in [0, 1), row i drawn from a CPU generator seeded with
    row_seeds[i]: what `_draw` inverts at each of n decoding steps. B generators of n numbers each
    cost microseconds, against the milliseconds of one decoding step."""
    out = torch.empty(len(row_seeds), n)
    for i, seed in enumerate(row_seeds):
        torch.rand(n, generator=torch.Generator().manual_seed(int(seed)), out=out[i])
    return out


def _sample(logits: Tensor, sampling: SamplingConfig, generator: torch.Generator | None,
            uniform: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Draw one token per row. logits: (B, V) -> token (B,) int64, its log-prob (B,) fp32.
    `uniform` (B,): the row's number to invert (else drawn from `generator`)."""
    logits = logits.float()
    if sampling.temperature == 0:
        logp_all = torch.log_softmax(logits, dim=-1)
        token = logits.argmax(-1)
    else:
        scaled = logits / sampling.temperature
        logp_all = torch.log_softmax(scaled, dim=-1)
        filtered = _filter_logits(scaled, sampling.top_k, sampling.top_p)
        probs = logp_all.exp() if filtered is scaled else torch.softmax(filtered, dim=-1)
        token = _draw(probs, generator, uniform)
    return token, logp_all.gather(-1, token[:, None]).squeeze(-1)


def _draw(probs: Tensor, generator: torch.Generator | None, uniform: Tensor | None = None) -> Tensor:
    """One index per row with probability `probs` (B, V) -> (B,), by inverting the CDF with one
    uniform number per row: O(V) work and B random numbers, where `torch.multinomial` draws V
    exponentials per row (most of a small model's decoding step on CPU). `uniform` (B,) gives
    the numbers; else they come from `generator`."""
    cdf = probs.cumsum(-1)
    if uniform is None:
        uniform = torch.rand(probs.shape[0], device=probs.device, generator=generator)
    u = uniform[:, None] * cdf[:, -1:]
    # the first index whose cumulative probability exceeds u; zero-probability tokens never are
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)


def decode_responses(tokenizer, rollout: Rollout) -> list[str]:
    """Response texts: tokens up to (not including) the stop token, special tokens dropped."""
    texts = []
    for ids, mask, ended in zip(rollout.response_ids.tolist(), rollout.response_mask.tolist(), rollout.ended.tolist()):
        n = sum(mask) - (1 if ended else 0)
        texts.append(tokenizer.decode(ids[:n], skip_special_tokens=True))
    return texts


def sample_responses(
    model,
    tokenizer,
    prompts: Sequence[PromptText],
    sampling: SamplingConfig,
    k: int = 1,
    seed: int = 0,
    batch_size: int = 64,
    autocast=None,
    row_seeds: Sequence[int] | None = None,
) -> list[list[str]]:
    """k sampled responses to each prompt, as text: result[i][j] is the j-th response to prompts[i].

    Prompts are tokenised with `rlhf.data.tokenize.encode_prompt` (plain text verbatim, a
    conversation through the chat template). Rows are decoded `batch_size` at a time; the same
    seed gives the same responses. `row_seeds` (one per prompt x k row, prompt-major) instead
    seeds each row's own random stream, so a row's response does not depend on the others. `autocast` is a zero-argument callable returning a context
    manager to run the model under (e.g. bf16 autocast); None runs as the model is.
    """
    from ..data.tokenize import encode_prompt

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    rows = [ids for ids in encoded for _ in range(k)]
    stops = stop_token_ids(tokenizer, model)
    texts: list[str] = []
    for start in range(0, len(rows), batch_size):
        with autocast() if autocast is not None else contextlib.nullcontext():
            rollout = generate(model, rows[start : start + batch_size], sampling, stops, tokenizer.pad_token_id, generator,
                               None if row_seeds is None else row_seeds[start : start + batch_size])
        texts.extend(decode_responses(tokenizer, rollout))
    return [texts[i * k : (i + 1) * k] for i in range(len(prompts))]
