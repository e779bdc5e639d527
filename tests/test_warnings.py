"""Correct runs print no transformers warnings that do not apply to them.

Two warnings reached new users on correct runs (issue 11):
- "Token indices sequence length is longer than the specified maximum sequence length ... will
  result in indexing errors", from tokenising a long HH transcript that rlhf then truncates itself;
- "We strongly recommend passing in an `attention_mask`", from scoring a right-padded batch with a
  causal reward model (GPT-2 and its kin check for it) where the mask is left out on purpose.
"""

from __future__ import annotations

import logging

import pytest

from rlhf.data.records import Message

TOO_LONG = "Token indices sequence length is longer"
NO_MASK = "We strongly recommend passing in an `attention_mask`"


@pytest.fixture
def transformers_warnings():
    """Messages transformers logs at WARNING or above while the test runs (its logger does not
    propagate to the root logger, so pytest's caplog would not see them)."""
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("transformers")
    handler, level = Collect(level=logging.WARNING), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logging.Logger.warning_once.cache_clear()  # transformers' warn-once memory: an earlier test must not hide one
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _fresh_tokenizer(model_dir):
    """A tokenizer whose declared model_max_length is far below the texts used here."""
    from rlhf.models.load import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    tokenizer.model_max_length = 32
    return tokenizer


@pytest.mark.parametrize("kind", ["plain", "conversation"])
def test_truncated_long_example_logs_no_length_warning(tiny_model_dir, transformers_warnings, kind):
    from rlhf.data.tokenize import tokenize_completion, tokenize_pair

    tokenizer = _fresh_tokenizer(tiny_model_dir)
    turn = "Once upon a time there was a little cat who liked to play in the sun. " * 8
    prompt = turn if kind == "plain" else (Message("user", turn), Message("assistant", turn), Message("user", turn))
    example = tokenize_completion(tokenizer, prompt, turn, max_length=24)
    pair = tokenize_pair(tokenizer, prompt, turn, "The end.", max_length=24)

    assert len(example.input_ids) == 24 and len(pair.chosen.input_ids) <= 24  # rlhf cut them itself
    assert not [m for m in transformers_warnings if TOO_LONG in m]


def _gpt2_reward_model(tokenizer):
    """A two-layer GPT-2 reward model: GPT-2 is one of the architectures that warns about padding."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=2, n_head=2, num_labels=1,
                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                        rlhf_input_format="causal")
    return GPT2ForSequenceClassification(config).eval()


def test_causal_reward_model_on_padded_batch_logs_no_mask_warning(tiny_model_dir, transformers_warnings):
    import torch

    from rlhf.models.reward import RewardModel

    tokenizer = _fresh_tokenizer(tiny_model_dir)
    rm = RewardModel(_gpt2_reward_model(tokenizer), tokenizer, "causal", max_length=24)
    prompts = ["Tom had a red ball.", "The dog was sad because it rained for a long time that day."]
    rewards = rm.score(prompts, [" He threw it.", " Then the sun came out."], batch_size=2)  # one padded batch

    assert rewards.shape == (2,) and torch.isfinite(rewards).all()
    assert not [m for m in transformers_warnings if NO_MASK in m]


def test_packed_reward_batch_logs_no_mask_warning(tiny_model_dir, transformers_warnings):
    from rlhf.data.collate import pack_rewards
    from rlhf.data.tokenize import tokenize_reward_causal
    from rlhf.models.reward import sequence_rewards

    tokenizer = _fresh_tokenizer(tiny_model_dir)
    examples = [tokenize_reward_causal(tokenizer, "Tom had a red ball.", " He threw it.", 24),
                tokenize_reward_causal(tokenizer, "The dog was sad.", " Then the sun came out.", 24)]
    batch = pack_rewards(examples, 64, tokenizer.pad_token_id)
    assert batch["input_ids"][0, -1] == tokenizer.pad_token_id  # the row is padded after its last sequence
    rewards = sequence_rewards(_gpt2_reward_model(tokenizer), batch)

    assert rewards.shape == (2,)
    assert not [m for m in transformers_warnings if NO_MASK in m]
