"""The one place that builds loss masks: prompt tokens must never be targets."""

import pytest

from rlhf.data.records import Message
from rlhf.data.tokenize import encode_prompt, tokenize_completion, tokenize_documents, truncate
from rlhf.models.load import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def test_plain_prompt_tokens_never_in_loss(tokenizer):
    ex = tokenize_completion(tokenizer, "Once upon a time", " there was a cat.", max_length=64)
    prompt_ids = encode_prompt(tokenizer, "Once upon a time")
    assert ex.input_ids[: len(prompt_ids)] == prompt_ids
    assert ex.prompt_len == len(prompt_ids)
    assert sum(ex.loss_mask[: ex.prompt_len]) == 0
    assert all(ex.loss_mask[ex.prompt_len :])
    assert ex.input_ids[-1] == tokenizer.eos_token_id  # the model learns to stop


def test_conversation_masks_everything_but_the_reply(tokenizer):
    prompt = (Message("user", "Tell me a story."), Message("assistant", "Which one?"), Message("user", "A happy one."))
    ex = tokenize_completion(tokenizer, prompt, "The sun came out.", max_length=128)
    reply = [t for t, m in zip(ex.input_ids, ex.loss_mask) if m]
    text = tokenizer.decode(reply)
    assert text.startswith("The sun came out.") and text.endswith("<|end|>")
    # The earlier assistant turn is context, not a target.
    masked = tokenizer.decode([t for t, m in zip(ex.input_ids, ex.loss_mask) if not m])
    assert "Which one?" in masked and "The sun" not in masked


def test_truncation_keeps_prompt_end_and_completion_start():
    prompt, completion = list(range(100)), list(range(100, 150))
    p, c = truncate(prompt, completion, 60)
    assert len(p) + len(c) == 60
    assert c == completion[:30] and p == prompt[-30:]
    p, c = truncate([1, 2], list(range(100)), 10)
    assert p == [1, 2] and c == list(range(8))
    assert truncate([1], [2], 10) == ([1], [2])


def test_documents_pack_into_full_blocks_with_eos(tokenizer):
    blocks = tokenize_documents(tokenizer, ["a cat sat", "the dog ran home"] * 10, block_size=8)
    assert blocks and all(len(b) == 8 for b in blocks)
    assert tokenizer.eos_token_id in sum(blocks, [])
