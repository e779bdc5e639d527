"""`rlhf eval rm`: the report's arithmetic by hand, and the command end to end."""

import json
import math

import pytest
import torch

from rlhf.cli import main
from rlhf.config import RewardConfig
from rlhf.eval.reward import accuracy_by_length, expected_calibration_error, reliability_table, summarize
from rlhf.train import reward


def logit(p):
    return math.log(p / (1 - p))


def test_reliability_table_by_hand():
    # Confidences sigmoid(|d|): 0.55 (right), 0.55 (wrong), 0.95 (right), 0.95 (right), two bins over [0.5, 1].
    margins = torch.tensor([logit(0.55), -logit(0.55), logit(0.95), logit(0.95)])
    low, high = reliability_table(margins, bins=2)
    assert (low["lo"], low["hi"], low["n"]) == (0.5, 0.75, 2)
    assert low["confidence"] == pytest.approx(0.55) and low["accuracy"] == 0.5
    assert high["n"] == 2 and high["confidence"] == pytest.approx(0.95) and high["accuracy"] == 1.0
    # ECE = (2 * |0.5 - 0.55| + 2 * |1 - 0.95|) / 4 = 0.05
    assert expected_calibration_error([low, high]) == pytest.approx(0.05)
    empty = reliability_table(margins, bins=5)[2]  # [0.7, 0.8) holds nothing
    assert empty["n"] == 0 and empty["accuracy"] is None


def test_accuracy_by_prompt_length_quantiles():
    margins = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, -1.0])
    lengths = torch.tensor([5, 10, 20, 40, 80, 160])
    rows = accuracy_by_length(margins, lengths, buckets=2)
    assert [(r["lo"], r["hi"], r["n"]) for r in rows] == [(5, 20, 3), (40, 160, 3)]
    assert [r["accuracy"] for r in rows] == pytest.approx([2 / 3, 1 / 3])


def test_summary_counts_ties_as_wrong():
    report = summarize(torch.tensor([2.0, 0.0, -1.0, 1.0]), torch.tensor([1, 2, 3, 4]), 5, 1)
    assert report["n"] == 4 and report["accuracy"] == 0.5 and report["mean_margin"] == 0.5
    expected_loss = sum(math.log1p(math.exp(-d)) for d in (2.0, 0.0, -1.0, 1.0)) / 4
    assert report["loss"] == pytest.approx(expected_loss)


def test_eval_rm_command_writes_json(tiny_model_dir, tmp_path, capsys):
    rows = [{"prompt": f"Story {i}: Once upon a time", "chosen": " there was a happy dog.", "rejected": " no."}
            for i in range(16)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = RewardConfig(model=str(tiny_model_dir), data=str(data), out=str(tmp_path / "rm"), max_steps=5, batch_size=4,
                       max_length=32, lr=3e-3, progress=False)
    model_dir = reward.run(cfg)
    out = tmp_path / "report.json"
    assert main(["eval", "rm", "--model", str(model_dir), "--data", str(data), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["n"] == 16 and report["accuracy"] == 1.0 and report["mean_margin"] > 0
    assert sum(row["n"] for row in report["calibration"]) == 16
    assert sum(row["n"] for row in report["by_prompt_length"]) == 16
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "calibration" in printed


def test_eval_rm_needs_model_and_data(capsys):
    assert main(["eval", "rm", "--data", "x.jsonl"]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["eval"]) == 2  # `eval` alone is `eval policy`, which names what it needs
    assert "--reference" in capsys.readouterr().err
    assert main(["evaluate"]) == 2  # unknown: the usage lists the commands, the eval ones included
    assert "eval rm" in capsys.readouterr().err
