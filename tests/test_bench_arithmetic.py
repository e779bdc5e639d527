"""bench/arithmetic.py: the t-interval over seeds and the paired gain over each seed's own SFT."""

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import arithmetic  # noqa: E402


def summary(sft: float, grpo: float) -> dict:
    row = {"greedy_accuracy": 0.5, "pass_at_k": 0.8, "kl_to_ref": 0.1, "wall_s": 10.0}
    return {"policies": [{"name": "sft", **row, "sampled_accuracy": sft, "kl_to_ref": 0.0},
                         {"name": "grpo", **row, "sampled_accuracy": grpo}]}


def test_interval_is_the_t_interval_of_the_mean():
    mean, low, high = arithmetic.interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(4.303 * 1.0 / 3 ** 0.5)
    assert arithmetic.interval([0.7]) == (0.7, 0.7, 0.7)


def test_gain_is_paired_by_seed():
    # SFT differs a lot between seeds, GRPO adds exactly 5 points to each: the paired gain has no spread
    results = arithmetic.aggregate([summary(0.30, 0.35), summary(0.60, 0.65), summary(0.45, 0.50)])
    table = arithmetic.format_markdown(results, 8, [0, 1, 2])
    grpo = next(line for line in table.splitlines() if line.startswith("| grpo"))
    assert "| 5.0 (5.0-5.0) |" in grpo  # no spread: the same gain on every seed
    assert "0.500 (" in grpo  # the unpaired sampled pass@1 keeps the seeds' spread
    assert "best: grpo, sampled pass@1 +5.0 points" in table
    worse = arithmetic.format_markdown(arithmetic.aggregate([summary(0.5, 0.45), summary(0.5, 0.56)]), 8, [0, 1])
    assert " to " in next(line for line in worse.splitlines() if line.startswith("| grpo"))  # a negative low end
