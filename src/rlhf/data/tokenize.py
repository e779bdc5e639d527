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


def _messages(prompt: tuple[Message, ...]) -> list[dict]:
    return [{"role": m.role, "content": m.content} for m in prompt]


def _template_ids(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "this data is conversational but the tokenizer has no chat template; "
            "use a tokenizer with one, or plain-text prompts"
        )
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    if isinstance(out, dict) or hasattr(out, "keys"):  # transformers 5 returns a BatchEncoding
        out = out["input_ids"]
    return list(out)


def encode_prompt(tokenizer, prompt: PromptText) -> list[int]:
    """Token ids a model continues from: the plain text, or the conversation with an open assistant turn."""
    if is_conversation(prompt):
        return _template_ids(tokenizer, _messages(prompt), add_generation_prompt=True)
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def encode_completion(tokenizer, prompt: PromptText, completion: str) -> list[int]:
    """Token ids of `completion` as it follows `prompt`, ending with the end-of-turn/EOS token(s)."""
    if is_conversation(prompt):
        msgs = _messages(prompt)
        head = _template_ids(tokenizer, msgs, add_generation_prompt=True)
        full = _template_ids(tokenizer, msgs + [{"role": "assistant", "content": completion}], False)
        if full[: len(head)] != head:
            raise ValueError("the chat template does not render the prompt as a prefix of prompt + reply")
        return full[len(head):]
    return tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


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
