"""Verifiable rewards: answer extraction, number normalisation, format, JSON, weighted sums, and
their use as `module:function` scorers with the rows' reference answers."""

import json

import pytest
import torch

from rlhf.data.formats import read_prompts
from rlhf.rewards import (
    Scores,
    answer_format,
    correct_with_format,
    exact_match,
    extract_answer,
    json_schema,
    json_valid,
    parse_number,
    regex_format,
    weighted_sum,
)
from rlhf.rollout.scorers import load_scorer


@pytest.mark.parametrize("text, expected", [
    ("so the total is 12 apples. #### 1,000\nthanks", "1,000"),  # rule 1: after the last ####
    (r"we get \boxed{\frac{1}{2}} in the end, not 3", r"\frac{1}{2}"),  # rule 2: last \boxed{}, braces balanced
    ("3 cats and 4 dogs make 7.", "7"),  # rule 3: the last number, not the sentence's period
    ("it costs -1,234.5 dollars", "-1,234.5"),
    ("  Paris. ", "Paris."),  # rule 4: the whole text
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text, value", [
    ("1,000", 1000.0), ("1000", 1000.0), ("1000.0", 1000.0), ("$1,000", 1000.0), ("50%", 50.0), ("-3", -3.0),
    (".5", 0.5), ("7.", 7.0), ("1,00", None), ("abc", None), ("1e400", None),
])
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_exact_match_normalises_numbers_and_text():
    responses = ["so 1,000", "The answer is #### 1000.0", r"\boxed{1000}", "answer 7.", "Paris.", "it is 3", "no"]
    answers = ["1000", "$1,000", "#### 1000", "7", "paris", "4", "3"]
    scores = exact_match([""] * 7, responses, answers)
    assert list(scores) == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert scores.parts == {"exact_match": list(scores)}


def test_exact_match_needs_answers():
    with pytest.raises(ValueError, match='"answer" field'):
        exact_match(["p"], ["1"], None)
    with pytest.raises(ValueError, match="row 1"):
        exact_match(["p", "q"], ["1", "2"], ["1", None])


def test_regex_and_answer_format():
    reward = regex_format(r"^<think>.*</think>", "think")
    assert reward([""] * 2, ["<think>x</think> 4", "4"]).parts == {"think": [1.0, 0.0]}
    assert list(answer_format([""] * 3, ["so #### 4", r"\boxed{4}", "4"])) == [1.0, 1.0, 0.0]


def test_json_valid_and_schema():
    schema = json.dumps({"type": "object", "required": ["name", "age"], "additionalProperties": False,
                         "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}}})
    responses = ['{"name": "Ann", "age": 3}', 'Here: ```json\n{"name": "Ann", "age": 3}\n```', '{"name": "Ann"}',
                 '{"name": "Ann", "age": -1}', '{"name": "Ann", "age": 3, "x": 1}', "not json {"]
    assert list(json_valid([""] * 6, responses)) == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    assert list(json_schema([""] * 6, responses, [schema] * 6)) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="not a JSON schema"):
        json_schema([""], ["{}"], ["{oops"])


def test_weighted_sum_totals_and_parts():
    reward = weighted_sum({"correct": (exact_match, 1.0), "format": (answer_format, 0.5)})
    scores = reward(["", "", ""], ["#### 4", "4", "#### 5"], ["4", "4", "4"])
    assert list(scores) == [1.5, 1.0, 0.5]
    assert scores.parts == {"correct": [1.0, 1.0, 0.0], "format": [1.0, 0.0, 1.0]}
    plain = weighted_sum({"len": (lambda p, r: [len(x) for x in r], 2.0)})  # a reward without answers
    assert list(plain(["", ""], ["ab", "c"])) == [4.0, 2.0]
    assert list(correct_with_format(["", ""], ["#### 4", "4"], ["4", "4"])) == pytest.approx([1.1, 1.0])
    with pytest.raises(ValueError, match="reward function, weight"):
        weighted_sum({"x": exact_match})


def test_scores_check_part_lengths():
    with pytest.raises(ValueError, match="part 'a'"):
        Scores([1.0, 2.0], {"a": [1.0]})


def test_scorer_passes_row_answers_and_returns_parts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "2+2?", "answer": "4"}, {"prompt": "2*3?", "answer": 6}, {"prompt": "no answer"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    records = read_prompts(path)
    assert [r.answer for r in records] == ["4", "6", None]  # a JSON number kept as its text
    scorer = load_scorer("rlhf.rewards.verifiable:correct_with_format")
    total, parts = scorer.score(["2+2?", "2*3?"], ["#### 4", "6"], answers=["4", "6"])
    assert total.tolist() == pytest.approx([1.1, 1.0])
    assert {k: v.tolist() for k, v in parts.items()} == {"exact_match": [1.0, 1.0], "answer_format": [1.0, 0.0]}
    assert torch.equal(scorer(["2+2?"], ["5"], answers=["4"]), torch.tensor([0.0]))
    # a scorer that takes no answers is called as before
    plain = load_scorer("rlhf.demo.oracle:gold_reward")
    assert not plain.takes_answers and plain.score(["x"], ["happy"], answers=["1"])[1] == {}
