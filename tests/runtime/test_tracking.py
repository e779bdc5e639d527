"""`--report-to`: TensorBoard (and W&B, offline) get the same scalars as metrics.jsonl and the PPO
family's sample table; `none` writes nothing; a missing extra is a clear error before the run."""

from __future__ import annotations

import json
import sys

import pytest

from rlhf.config import PPOConfig, SFTConfig, TrainConfig
from rlhf.runtime import RunDir, tracking


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def tensorboard_events(run_path):
    """The EventAccumulator of run_path/tensorboard (every event file in it, purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_path / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def texts(accumulator, tag: str) -> dict[int, str]:
    """step -> the text of a TensorBoard text summary (`add_text(tag, ...)` stores it as a string tensor)."""
    return {event.step: event.tensor_proto.string_val[0].decode() for event in accumulator.Tensors(f"{tag}/text_summary")}


def test_sft_with_tensorboard_logs_the_scalars_of_metrics_jsonl(tiny_model_dir, demonstrations_file, tmp_path):
    pytest.importorskip("tensorboard")
    from rlhf.train import sft

    out = tmp_path / "sft"
    sft.run(SFTConfig(model=str(tiny_model_dir), data=str(demonstrations_file), out=str(out), max_steps=3,
                      batch_size=4, max_length=32, progress=False, log_every=1, lr=1e-3, report_to="tensorboard"))
    lines = read_jsonl(out / "metrics.jsonl")
    events = tensorboard_events(out)
    for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert logged == [(line["step"], pytest.approx(line[key], rel=1e-6)) for line in lines], key
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert json.loads(texts(events, "config")[0].strip("`\n"))["report_to"] == "tensorboard"
    assert not (out / "wandb").exists()


def test_report_to_none_writes_and_imports_nothing(tiny_model_dir, demonstrations_file, tmp_path, monkeypatch):
    from rlhf.train import sft

    for module in tracking.MODULES.values():  # importing either would now fail the run
        monkeypatch.setitem(sys.modules, module, None)
    out = tmp_path / "sft"
    sft.run(SFTConfig(model=str(tiny_model_dir), data=str(demonstrations_file), out=str(out), max_steps=2,
                      batch_size=4, max_length=32, progress=False, log_every=1))
    assert (out / "metrics.jsonl").exists()
    assert not (out / "tensorboard").exists() and not (out / "wandb").exists()


@pytest.mark.parametrize("kind", ["tensorboard", "wandb"])
def test_a_missing_extra_is_named_before_anything_is_written(kind, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, tracking.MODULES[kind], None)  # as if the package were not installed
    out = tmp_path / "run"
    with pytest.raises(tracking.TrackerMissing, match=rf"--report-to {kind} needs .*pip install 'rlhf\[{kind}\]'"):
        RunDir(TrainConfig(out=str(out), report_to=kind))
    assert not out.exists()


def test_ppo_with_tensorboard_logs_its_samples_as_a_table(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from rlhf.train import ppo

    rewards = tmp_path / "rewards"
    rewards.mkdir()
    (rewards / "tracking_test_rewards.py").write_text(
        "def letter_e(prompts, responses):\n    return [r.count('e') / 5 for r in responses]\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(rewards))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["Once upon a time", "The dog was",
                                                                         "Tom had a red ball.", "Sue liked"]))
    out = tmp_path / "grpo"
    ppo.run(PPOConfig(model=str(tiny_model_dir), data=str(prompts), out=str(out), reward="tracking_test_rewards:letter_e",
                      algo="grpo", max_steps=2, batch_size=2, minibatch_size=4, max_new_tokens=6, max_length=48,
                      precision="fp32", save_every=0, progress=False, samples_every=1, seed=1, report_to="tensorboard"))
    events = tensorboard_events(out)
    lines = read_jsonl(out / "metrics.jsonl")
    assert [e.value for e in events.Scalars("reward")] == [pytest.approx(line["reward"], rel=1e-6) for line in lines]
    samples = read_jsonl(out / "samples.jsonl")
    tables = texts(events, "samples")
    assert sorted(tables) == sorted({s["step"] for s in samples}) == [1, 2]
    for sample in samples:  # every sample's response and score is in its step's table
        table = tables[sample["step"]]
        assert table.startswith("| prompt | response | score | ended |")
        assert tracking.markdown_table(*tracking.sample_table([sample])).splitlines()[-1] in table


def test_a_resume_replaces_the_events_after_its_checkpoint(tmp_path):
    pytest.importorskip("tensorboard")
    samples = tmp_path / "samples.jsonl"
    first = tracking.Tracker("tensorboard", tmp_path, samples, {})
    for step in (1, 2, 3):
        first.log({"step": step, "loss": float(step)})
    first.close()  # killed after step 3; its checkpoint was at step 1
    second = tracking.Tracker("tensorboard", tmp_path, samples, {})
    second.resume_after(1)
    for step in (2, 3, 4):
        second.log({"step": step, "loss": 10.0 * step, "note": "not a number"})
    second.close()
    events = tensorboard_events(tmp_path)
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 1.0), (2, 20.0), (3, 30.0), (4, 40.0)]
    assert "note" not in events.Tags()["scalars"]


def test_samples_are_read_once_and_a_torn_line_waits(tmp_path):
    pytest.importorskip("tensorboard")
    samples = tmp_path / "samples.jsonl"
    tracker = tracking.Tracker("tensorboard", tmp_path, samples, {})
    row = {"step": 1, "prompt": "a|b", "response": "x\ny", "score": 0.5}
    samples.write_text(json.dumps(row) + "\n" + '{"step": 2, "prompt": "c"', encoding="utf-8")
    tracker.log({"step": 1, "loss": 1.0})
    with open(samples, "a", encoding="utf-8") as f:
        f.write(', "response": "z", "score": 1}\n')
    tracker.log({"step": 2, "loss": 1.0})
    tracker.close()
    tables = texts(tensorboard_events(tmp_path), "samples")
    assert tables == {1: "| prompt | response | score |\n|---|---|---|\n| a\\|b | x<br>y | 0.5 |",
                      2: "| prompt | response | score |\n|---|---|---|\n| c | z | 1 |"}


def test_wandb_runs_offline_under_the_run_directory(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default: no network call
    monkeypatch.setenv("WANDB_SILENT", "true")
    samples = tmp_path / "samples.jsonl"
    tracker = tracking.Tracker("wandb", tmp_path, samples, {"lr": 0.1})
    samples.write_text(json.dumps({"step": 1, "prompt": "p", "response": "r", "score": 1.0}) + "\n")
    tracker.log({"step": 1, "loss": 2.0})
    tracker.log({"step": 2, "loss": 1.0})
    assert tracker.backend.run.settings.mode == "offline"
    tracker.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


@pytest.mark.parametrize("command", ["pretrain", "sft", "rm", "dpo", "ppo"])
def test_every_training_command_takes_report_to(command):
    from rlhf.cli import parse

    assert parse(command, []).report_to == "none"
    assert parse(command, ["--report-to", "wandb"]).report_to == "wandb"
    with pytest.raises(SystemExit):
        parse(command, ["--report-to", "mlflow"])
