"""`rlhf dpo --online` on the tiny model: rounds of sample, label, train; resume without relabelling."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from rlhf.config import DPOConfig
from rlhf.train import dpo


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("online-data") / "prompts.jsonl"
    openings = ["Once upon a time", "Tom had a red ball", "The dog was", "Sue and her cat", "It was a sunny day",
                "The little bird", "Mom said", "One day the cat"]
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in openings), encoding="utf-8")
    return path


def online_config(model, data, out, **overrides):
    base = dict(model=str(model), data=str(data), out=str(out), online=True, labeler="oracle", rounds=2,
                prompts_per_round=8, samples_per_prompt=2, max_new_tokens=8, max_length=32, batch_size=4,
                lr=1e-3, warmup_steps=0, log_every=1, save_every=0, kl_prompts=2, progress=False)
    return DPOConfig(**{**base, **overrides})


def metrics_steps(out) -> int:
    """Training steps of the finished rounds, as OUT/metrics.jsonl counts them."""
    return max(json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines())


def response_length(prompts, responses):
    """A scorer for the test (the tiny model's text has no sentiment for the oracle to read)."""
    return [float(len(r)) for r in responses]


@pytest.mark.parametrize("labeler", ["oracle", f"{__name__}:response_length"])
def test_online_rounds_label_train_and_log(tiny_model_dir, prompts_file, tmp_path, labeler):
    out = tmp_path / "online"
    model_dir = dpo.run(online_config(tiny_model_dir, prompts_file, out, labeler=labeler))
    before, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(model_dir / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    for r in range(2):
        pairs = [json.loads(line) for line in (out / "rounds" / f"round-{r}" / "pairs.jsonl").read_text().splitlines()]
        assert pairs and all({"prompt", "chosen", "rejected"} <= set(p) for p in pairs)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all({"step", "loss", "lr", "tokens_per_s", "elapsed_s", "round"} <= set(line) for line in lines)
    assert [line["round"] for line in lines if "labels" in line] == [0, 1]
    steps = [line["step"] for line in lines if "labels" not in line]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # counted across rounds
    summary = json.loads((out / "summary.json").read_text())
    assert summary["online"] and summary["rounds"] == 2 and math.isfinite(summary["kl"])
    assert summary["processes"] == 1 and summary["wall_s"] > 0
    # oracle: one label per pair (k = 2); a scorer scores every sampled response
    assert summary["labels"] == (16 if labeler == "oracle" else 32)


def test_online_resume_adds_rounds_without_relabelling(tiny_model_dir, prompts_file, tmp_path, monkeypatch):
    """Two rounds straight, against one round then --resume with two: the second round reads the
    labelled pairs already on disk (as after a kill mid-round) and ends with the same weights."""
    import importlib
    import shutil

    generate = importlib.import_module("rlhf.rollout.generate")  # the module, not the function of that name

    straight_cfg = online_config(tiny_model_dir, prompts_file, tmp_path / "straight", precision="fp32")
    straight = load_file(str(dpo.run(straight_cfg) / "model.safetensors"))

    out = tmp_path / "resumed"
    one_round = DPOConfig(**{**straight_cfg.__dict__, "out": str(out), "rounds": 1})
    dpo.run(one_round)
    # the run's checkpoint after round 0: the policy it continues from
    assert [p.name for p in (out / "checkpoints").iterdir()] == [f"step-{metrics_steps(out)}"]
    labelled = out / "rounds" / "round-1"
    labelled.mkdir()
    shutil.copy(tmp_path / "straight" / "rounds" / "round-1" / "pairs.jsonl", labelled / "pairs.jsonl")
    info = json.loads((tmp_path / "straight" / "rounds" / "round-1" / "round.json").read_text())
    (labelled / "round.json").write_text(json.dumps({k: info[k] for k in ("round", "labels", "pairs", "sample_s",
                                                                          "label_s")}))

    def refuse(*args, **kwargs):
        raise AssertionError("sampled again on resume")

    monkeypatch.setattr(generate, "sample_responses", refuse)
    two_rounds = DPOConfig(**{**one_round.__dict__, "rounds": 2})
    with pytest.raises(FileExistsError):
        dpo.run(two_rounds)  # without --resume an existing run is never overwritten
    resumed = load_file(str(dpo.run(DPOConfig(**{**two_rounds.__dict__, "resume": True})) / "model.safetensors"))
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["pairs"] == 16
