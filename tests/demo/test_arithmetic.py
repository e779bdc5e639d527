"""The arithmetic task: seeded problems in disjoint splits, the verifiable checker, pass@k, and
`rlhf demo --task arithmetic --quick` end to end (summary.json and report.html agree)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from rlhf.cli import main
from rlhf.demo.arithmetic import (
    answer_of,
    correctness_reward,
    demonstrations,
    is_correct,
    pass_at_k,
    problems,
    prompt_rows,
)
from rlhf.demo.report import format_number
from rlhf.rewards.verifiable import exact_match


def test_splits_are_disjoint_and_the_test_split_ignores_the_seed():
    train = problems("train", 500, seed=0)
    test = problems("test", 300, seed=0)
    assert not set(train) & set(test)
    assert problems("test", 300, seed=5) == test  # every seed is evaluated on the same problems
    assert problems("train", 500, seed=1) != train and problems("train", 500, seed=0) == train
    assert len(set(train)) == 500
    for p in train + test:
        a, op, b = re.fullmatch(r"(\d+)([+-])(\d+)", p).groups()
        assert 0 <= int(a) <= 99 and 0 <= int(b) <= 99 and (op == "+" or int(a) >= int(b))
    with pytest.raises(ValueError, match="split"):
        problems("dev", 1)
    with pytest.raises(ValueError, match="asked for"):
        problems("test", 10**6)


def test_demonstrations_are_worked_problems():
    demos = demonstrations(3, seed=0)
    for demo in demos:
        assert demo.prompt.endswith("=") and demo.completion == answer_of(demo.prompt[:-1])
    assert answer_of("47+38") == "85" and answer_of("12-7") == "5"


@pytest.mark.parametrize("prompt, response, right", [
    ("47+38=", "85", True), ("47+38=", " 85", True), ("47+38=", "so 12 then 85", True), ("47+38=", "84", False),
    ("47+38=", "85 or 84", False), ("47+38=", "", False), ("12-7=", "5", True), ("3-3=", "0", True),
    ("12-7=", "-5", False), ("9+9=", "eighteen", False),
])
def test_checker_reads_the_final_number(prompt, response, right):
    assert is_correct(prompt, response) is right
    assert correctness_reward([prompt], [response]) == [float(right)]


def test_checker_refuses_a_prompt_that_is_not_a_problem():
    with pytest.raises(ValueError, match="not an arithmetic prompt"):
        is_correct("Once upon a time", "5")
    with pytest.raises(ValueError, match="not an arithmetic prompt"):
        is_correct("__import__('os')=", "5")


def test_prompt_rows_feed_the_library_exact_match():
    rows = prompt_rows(["47+38", "12-7"])
    assert rows == [{"prompt": "47+38=", "answer": "85"}, {"prompt": "12-7=", "answer": "5"}]
    scores = exact_match([r["prompt"] for r in rows], ["85", "6"], answers=[r["answer"] for r in rows])
    assert list(scores) == [1.0, 0.0]


@pytest.mark.parametrize("n, correct, k, expected", [
    (4, 1, 1, 0.25), (4, 1, 2, 0.5), (4, 0, 2, 0.0), (4, 3, 2, 1.0), (8, 2, 8, 1.0), (5, 2, 2, 0.7),
])
def test_pass_at_k_by_hand(n, correct, k, expected):
    # (5, 2, 2): 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7
    assert pass_at_k(n, correct, k) == pytest.approx(expected)


def test_pass_at_k_refuses_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("arith") / "demo"
    assert main(["demo", "--task", "arithmetic", "--quick", "--out", str(out), "--no-progress"]) == 0
    return out


def test_quick_demo_writes_every_policy_and_the_report(demo_dir):
    summary = json.loads((demo_dir / "summary.json").read_text())
    names = [p["name"] for p in summary["policies"]]
    assert names[0] == "sft" and {"grpo", "rloo"} <= set(names)
    for policy in summary["policies"]:
        for key in ("greedy_accuracy", "sampled_accuracy", "pass_at_k", "kl_to_ref", "wall_s"):
            assert math.isfinite(policy[key]), (policy["name"], key)
        assert 0 <= policy["sampled_accuracy"] <= policy["pass_at_k"] <= 1
        assert (demo_dir / policy["dir"] / "config.yaml").is_file()
        assert (demo_dir / policy["dir"] / "model" / "model.safetensors").is_file()
    assert summary["policies"][0]["kl_to_ref"] == 0.0
    config = (demo_dir / "grpo" / "config.yaml").read_text()
    assert "rlhf.rewards.verifiable:exact_match" in config and "algo: grpo" in config

    page = (demo_dir / "report.html").read_text()
    for key, value in [("policies.0.greedy_accuracy", summary["policies"][0]["greedy_accuracy"]),
                       ("policies.1.kl_to_ref", summary["policies"][1]["kl_to_ref"]), ("wall_s", summary["wall_s"])]:
        assert f'data-key="{key}">{format_number(value)}<' in page
    for figure in re.findall(r'<img src="([^"]+)"', page):
        assert (demo_dir / figure).is_file()
    assert "accuracy-vs-kl.png" in page and "curves-rl.png" in page
