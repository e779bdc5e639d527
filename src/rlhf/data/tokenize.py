"""All tokenisation happens here, once: chat template, truncation and loss masks.

Plain-text prompts are continued verbatim (`prompt + completion + EOS`); conversations go
through the tokenizer's chat template, and the completion is the assistant turn it opens.
Prompt and completion are encoded separately so the boundary, and hence the loss mask, is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from .records import Message, PromptText, is_conversation


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]  # (T,) prompt then completion
    loss_mask: list[int]  # (T,) 1 on completion tokens, the only ones that enter a loss
    prompt_len: int  # number of leading prompt tokens


# Texts are encoded whole and then cut by `truncate` (or the caller's own limit), so the
# tokenizer's check against its `model_max_length` only warns, wrongly, that a sequence rlhf is
# about to shorten "will result in indexing errors" (a long HH transcript did, on every stage).
UNCHECKED_LENGTH = {"verbose": False}


def _messages(prompt: tuple[Message, ...]) -> list[dict]:
    return [{"role": m.role, "content": m.content} for m in prompt]


def _template_ids(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "this data is conversational but the tokenizer has no chat template; "
            "use a tokenizer with one, or plain-text prompts"
        )
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt,
                                        tokenizer_kwargs=UNCHECKED_LENGTH)
    if isinstance(out, dict) or hasattr(out, "keys"):  # transformers 5 returns a BatchEncoding
        out = out["input_ids"]
    return list(out)


def encode_prompt(tokenizer, prompt: PromptText) -> list[int]:
    """Token ids a model continues from: the plain text, or the conversation with an open assistant turn."""
    if is_conversation(prompt):
        return _template_ids(tokenizer, _messages(prompt), add_generation_prompt=True)
    return tokenizer(prompt, add_special_tokens=False, **UNCHECKED_LENGTH)["input_ids"]


def encode_completion(tokenizer, prompt: PromptText, completion: str) -> list[int]:
    """Token ids of `completion` as it follows `prompt`, ending with the end-of-turn/EOS token(s)."""
    if is_conversation(prompt):
        msgs = _messages(prompt)
        head = _template_ids(tokenizer, msgs, add_generation_prompt=True)
        full = _template_ids(tokenizer, msgs + [{"role": "assistant", "content": completion}], False)
        if full[: len(head)] != head:
            raise ValueError("the chat template does not render the prompt as a prefix of prompt + reply")
        return full[len(head):]
    return tokenizer(completion, add_special_tokens=False, **UNCHECKED_LENGTH)["input_ids"] + [tokenizer.eos_token_id]


def truncate(prompt_ids: list[int], completion_ids: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Fit prompt + completion into `max_length` tokens.

    The completion keeps its start and at least half the budget (or all of itself if shorter);
    the prompt keeps its end, the part nearest the completion.
    """
    if len(prompt_ids) + len(completion_ids) <= max_length:
        return prompt_ids, completion_ids
    completion_budget = max(min(len(completion_ids), max_length // 2), max_length - len(prompt_ids))
    completion_ids = completion_ids[:completion_budget]
    prompt_budget = max_length - len(completion_ids)
    return (prompt_ids[len(prompt_ids) - prompt_budget:] if prompt_budget else []), completion_ids


def tokenize_completion(tokenizer, prompt: PromptText, completion: str, max_length: int) -> TokenizedExample:
    """One example for SFT (and each side of a preference pair): loss only on completion tokens."""
    prompt_ids, completion_ids = truncate(
        encode_prompt(tokenizer, prompt), encode_completion(tokenizer, prompt, completion), max_length
    )
    return TokenizedExample(
        input_ids=prompt_ids + completion_ids,
        loss_mask=[0] * len(prompt_ids) + [1] * len(completion_ids),
        prompt_len=len(prompt_ids),
    )


def tokenize_documents(tokenizer, texts: Iterable[str], block_size: int) -> list[list[int]]:
    """Pack documents, each followed by EOS, into consecutive blocks of `block_size` tokens.

    The final partial block is dropped; every token of a block is a training target.
    """
    stream: list[int] = []
    eos = tokenizer.eos_token_id
    encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    for ids in encoded:
        stream.extend(ids)
        stream.append(eos)
    return [stream[i : i + block_size] for i in range(0, len(stream) - block_size + 1, block_size)]


def count_bytes(texts: Sequence[str]) -> int:
    """UTF-8 bytes of the documents plus one per separator, for tokenizer-independent bits per byte."""
    return sum(len(t.encode("utf-8")) + 1 for t in texts)


# ---------------------------------------------------------------- preference pairs and binary feedback (DPO family)


@dataclass(frozen=True)
class TokenizedPair:
    """Both sides of a comparison, each `prompt + response + EOS`, with the same prompt tokens."""

    chosen: TokenizedExample
    rejected: TokenizedExample


def tokenize_pair(tokenizer, prompt: PromptText, chosen: str, rejected: str, max_length: int) -> TokenizedPair:
    """One comparison for the DPO family: loss masks on the responses only.

    The prompt is encoded once and truncated (from the left) for the longer response, so both
    sides condition on exactly the same prompt tokens; each response then keeps its start within
    `max_length` (see `truncate`).
    """
    prompt_ids = encode_prompt(tokenizer, prompt)
    chosen_ids = encode_completion(tokenizer, prompt, chosen)
    rejected_ids = encode_completion(tokenizer, prompt, rejected)
    prompt_ids, _ = truncate(prompt_ids, max(chosen_ids, rejected_ids, key=len), max_length)
    budget = max_length - len(prompt_ids)

    def example(response_ids: list[int]) -> TokenizedExample:
        response_ids = response_ids[:budget]
        return TokenizedExample(prompt_ids + response_ids, [0] * len(prompt_ids) + [1] * len(response_ids), len(prompt_ids))

    return TokenizedPair(example(chosen_ids), example(rejected_ids))


def mismatched_partners(prompts: Sequence[PromptText], seed: int) -> list[int]:
    """For KTO's reference point: partner[i] = j, the example whose response is paired with
    prompt i to form a mismatched (x_i, y_j). The examples are put in a seeded random cycle and j
    is the next one after i whose prompt differs from i's (i itself only if all prompts are equal),
    so nearly every response is used once and a response never meets its own prompt.
    """
    import random

    n = len(prompts)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    partner = [0] * n
    for k, i in enumerate(order):
        for step in range(1, n + 1):
            j = order[(k + step) % n]
            if prompts[j] != prompts[i] or step == n:
                partner[i] = j
                break
    return partner


# ---------------------------------------------------------------- reward models
#
# A reward model reads a prompt and one response and returns a scalar. Two input formats:
#   "causal": a decoder (a causal LM with a value head) reads exactly what the policy writes,
#             prompt then response as `tokenize_completion` builds them (chat template, EOS), and
#             is scored on its last non-padding token;
#   "pair":   an encoder (BERT-like) reads the tokenizer's sentence-pair layout,
#             `[CLS] prompt [SEP] response [SEP]` with segment ids 0 / 1, and is scored on [CLS].
# Both keep the start of the response and the end of the prompt when they must cut (`truncate`).
# `context_turns` limits what of a prompt the reward model reads (`reward_context`): all of it
# (-1), its last N turns, or nothing (0: the response alone, `[CLS] response [SEP]` for an encoder).

REWARD_INPUT_FORMATS = ("causal", "pair")
SPEAKERS = {"system": "System", "user": "User", "assistant": "Assistant"}


@dataclass(frozen=True)
class RewardExample:
    input_ids: list[int]  # (T,) one prompt + response sequence, special tokens included
    token_type_ids: list[int] | None  # (T,) segment ids for "pair" inputs (0 prompt, 1 response); None for "causal"


def conversation_text(prompt: PromptText) -> str:
    """A prompt as plain text, for tokenizers without a chat template (encoders).

    A conversation becomes "User: ...\\n\\nAssistant: ...\\n\\nUser: ..." (one paragraph per turn).
    """
    if not is_conversation(prompt):
        return prompt
    return "\n\n".join(f"{SPEAKERS[m.role]}: {m.content}" for m in prompt)


def reward_context(prompt: PromptText, context_turns: int = -1) -> PromptText:
    """The part of `prompt` a reward model reads: all of it (-1), the last `context_turns` turns of
    a conversation (a plain-text prompt counts as one turn), or nothing ("" for 0)."""
    if context_turns < 0:
        return prompt
    if context_turns == 0:
        return ""
    return prompt[-context_turns:] if is_conversation(prompt) else prompt


def tokenize_reward_causal(tokenizer, prompt: PromptText, response: str, max_length: int) -> RewardExample:
    """Prompt then response as the policy sees them (the SFT layout, EOS or end-of-turn included)."""
    return RewardExample(tokenize_completion(tokenizer, prompt, response, max_length).input_ids, None)


def _pair_backend(tokenizer):
    """A copy of the fast tokenizer's backend with padding and truncation off (tokenizer.json may
    switch them on), kept on the tokenizer so it is built once."""
    backend = getattr(tokenizer, "_rlhf_pair_backend", None)
    if backend is None:
        from tokenizers import Tokenizer

        source = getattr(tokenizer, "backend_tokenizer", None)
        if source is None or source.post_processor is None:
            raise ValueError(
                f"{type(tokenizer).__name__} has no fast backend with a sentence-pair template, "
                "so it cannot build encoder reward inputs"
            )
        backend = Tokenizer.from_str(source.to_str())
        backend.no_padding()
        backend.no_truncation()
        tokenizer._rlhf_pair_backend = backend
    return backend


def tokenize_reward_pair(tokenizer, prompt: PromptText, response: str, max_length: int) -> RewardExample:
    """`[CLS] prompt [SEP] response [SEP]` (the tokenizer's own pair template), at most `max_length` tokens."""
    backend = _pair_backend(tokenizer)
    context = conversation_text(prompt)
    response_enc = backend.encode(response, add_special_tokens=False)
    if not context:  # no context: the single-sequence template, `[CLS] response [SEP]`
        budget = max_length - backend.post_processor.num_special_tokens_to_add(False)
        if budget < 1:
            raise ValueError(f"max_length {max_length} leaves no room for text in the tokenizer's template")
        if len(response_enc.ids) > budget:
            response_enc.truncate(budget, direction="right")
        single = backend.post_process(response_enc, None, add_special_tokens=True)
        return RewardExample(list(single.ids), list(single.type_ids))
    prompt_enc = backend.encode(context, add_special_tokens=False)
    budget = max_length - backend.post_processor.num_special_tokens_to_add(True)
    if budget < 2:
        raise ValueError(f"max_length {max_length} leaves no room for text in the tokenizer's pair template")
    # Only the lengths matter here; with budget >= 2 a non-empty prompt keeps at least one token.
    kept_prompt, kept_response = truncate(list(range(len(prompt_enc.ids))), list(range(len(response_enc.ids))), budget)
    if len(kept_prompt) < len(prompt_enc.ids):
        prompt_enc.truncate(len(kept_prompt), direction="left")  # keep the end, nearest the response
    if len(kept_response) < len(response_enc.ids):
        response_enc.truncate(len(kept_response), direction="right")
    pair = backend.post_process(prompt_enc, response_enc, add_special_tokens=True)
    return RewardExample(list(pair.ids), list(pair.type_ids))


REWARD_TOKENIZERS = {"causal": tokenize_reward_causal, "pair": tokenize_reward_pair}


def tokenize_for_reward(tokenizer, prompt: PromptText, response: str, max_length: int, input_format: str,
                        context_turns: int = -1) -> RewardExample:
    """One reward-model input in `input_format` ("causal" or "pair", see above), reading the
    `reward_context(prompt, context_turns)` of the prompt."""
    if input_format not in REWARD_TOKENIZERS:
        raise ValueError(f"unknown reward input format {input_format!r}; choose one of {REWARD_INPUT_FORMATS}")
    return REWARD_TOKENIZERS[input_format](tokenizer, reward_context(prompt, context_turns), response, max_length)
