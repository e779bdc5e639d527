"""`rlhf eval rm` like RewardBench: several files, accuracy per file and per category with Wilson
intervals, and an ensemble's calibration and accuracy by the members' disagreement."""

import json

import pytest
import torch

from rlhf.cli import main
from rlhf.config import EvalRMConfig, RewardConfig
from rlhf.eval.metrics import wilson_interval
from rlhf.eval.reward import accuracy_by_category, accuracy_by_disagreement
from rlhf.train import reward

GOOD, BAD = " there was a happy dog.", " no."


def test_wilson_interval_by_hand():
    # 8 of 10: centre (0.8 + 1.96^2/20) / (1 + 1.96^2/10) = 0.71674, half width
    # 1.96 / 1.38416 * sqrt(0.8 * 0.2 / 10 + 1.96^2 / 400) = 0.22658
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.49016, abs=1e-5), pytest.approx(0.94332, abs=1e-5))
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_accuracy_by_category_and_by_disagreement_by_hand():
    margins = torch.tensor([1.0, -1.0, 2.0, 0.5, -0.5, 3.0])
    rows = accuracy_by_category(margins, ["b", "a", "b", "a", "a", "all"])
    assert [(r["category"], r["n"], r["accuracy"]) for r in rows] == [("a", 3, pytest.approx(1 / 3)), ("all", 1, 1.0),
                                                                        ("b", 2, 1.0)]
    assert rows[0]["ci_low"] < 1 / 3 < rows[0]["ci_high"]
    # the members agree on the first three pairs (std 0.1) and disagree on the last three (std 2)
    bins = accuracy_by_disagreement(margins, torch.tensor([0.1, 0.1, 0.1, 2.0, 2.0, 2.0]), bins=2)
    assert [(b["n"], b["accuracy"]) for b in bins] == [(3, pytest.approx(2 / 3)), (3, pytest.approx(2 / 3))]
    assert bins[0]["hi"] < bins[1]["lo"]


def test_data_files_from_a_tuple_one_path_or_a_comma_list():
    assert EvalRMConfig(data=("a.jsonl", "b.jsonl")).data_files == ("a.jsonl", "b.jsonl")
    assert EvalRMConfig(data="a.jsonl,b.jsonl").data_files == ("a.jsonl", "b.jsonl")
    assert EvalRMConfig(data="a.jsonl").data_files == ("a.jsonl",)


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_eval_rm_per_file_and_category_and_ensemble(tiny_model_dir, tmp_path):
    train = write(tmp_path / "train.jsonl", [{"prompt": f"Story {i}: Once upon a time", "chosen": GOOD,
                                              "rejected": BAD} for i in range(16)])
    model_dir = reward.run(RewardConfig(model=str(tiny_model_dir), data=str(train), out=str(tmp_path / "rm"),
                                        ensemble=2, max_steps=5, batch_size=4, max_length=32, lr=3e-3, progress=False,
                                        precision="fp32"))
    # The model learned GOOD over BAD: "easy" rows are right, "flipped" rows (the labels swapped) wrong.
    rows = [{"prompt": f"Story {i}: Once upon a time", "chosen": GOOD, "rejected": BAD, "category": "easy"}
            for i in range(6)]
    rows += [{"prompt": f"Story {i}: Once upon a time", "chosen": BAD, "rejected": GOOD, "category": "flipped"}
             for i in range(2)]
    bench = write(tmp_path / "bench.jsonl", rows)
    plain = write(tmp_path / "plain.jsonl", [{"prompt": "Story 9: Once upon a time", "chosen": GOOD, "rejected": BAD}] * 4)
    out = tmp_path / "report.json"
    assert main(["eval", "rm", "--model", str(model_dir), "--data", str(bench), str(plain), "--out", str(out),
                 "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["n"] == 12 and report["accuracy"] == pytest.approx(10 / 12)
    assert [(f["data"], f["n"], f["accuracy"]) for f in report["files"]] == [(str(bench), 8, 0.75), (str(plain), 4, 1.0)]
    by_category = {r["category"]: (r["n"], r["accuracy"]) for r in report["files"][0]["by_category"]}
    assert by_category == {"easy": (6, 1.0), "flipped": (2, 0.0)}
    assert [r["category"] for r in report["files"][1]["by_category"]] == ["all"]
    assert {r["category"]: r["n"] for r in report["by_category"]} == {"all": 4, "easy": 6, "flipped": 2}
    assert report["ci_low"] < report["accuracy"] < report["ci_high"]
    ensemble = report["ensemble"]
    assert ensemble["members"] == 2 and len(ensemble["member_accuracy"]) == 2
    assert sum(r["n"] for r in ensemble["by_disagreement"]) == 12 and sum(r["n"] for r in report["calibration"]) == 12
    # a comma list reads the same files
    assert main(["eval", "rm", "--model", str(model_dir), "--data", f"{bench},{plain}", "--out", str(out),
                 "--no-progress"]) == 0
    assert json.loads(out.read_text())["n"] == 12
