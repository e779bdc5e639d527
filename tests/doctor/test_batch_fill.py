"""Data that cannot fill a batch is refused at once, naming the flag, and leaves no folder behind
(issue 27 item 3: a 5-pair export ran `rlhf rm` for 22 s, then left rm-human/config.yaml behind)."""

from __future__ import annotations

import json

import pytest

from rlhf.cli import main
from rlhf.config import DPOConfig, PPOConfig, PretrainConfig, RewardConfig, SFTConfig
from rlhf.doctor.inputs import check_inputs

GOLD = "rlhf.demo.oracle:gold_reward"


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def prefs(tmp_path):
    """Five comparisons: what a first `rlhf label export` of a small project gives."""
    return write_rows(tmp_path / "prefs.jsonl", [{"prompt": f"Story {i}:", "chosen": " a happy day", "rejected": " sad"}
                                                 for i in range(5)])


def test_fitting_batch_size_and_messages():
    from rlhf.data.batches import batch_problem, fitting_batch_size

    assert [fitting_batch_size(n) for n in (1, 2, 3, 5, 8, 31)] == [1, 2, 2, 4, 8, 16]
    assert fitting_batch_size(5, world=2) == 4 and fitting_batch_size(9, world=4) == 8 and fitting_batch_size(1, 2) == 0
    assert batch_problem(16, 16) is None and batch_problem(17, 16) is None
    assert batch_problem(5, 16, what="preferences", source="prefs.jsonl") == \
        "prefs.jsonl holds 5 preferences, fewer than one batch of 16: pass --batch-size 4 (or add data)"
    assert "over 2 processes: pass --batch-size 4" in batch_problem(5, 8, world=2)
    assert "fewer than the 2 processes" in batch_problem(1, 2, world=2)
    assert batch_problem(100, 3, world=2).startswith("the batch size 3 does not divide among 2 processes")
    assert "--rm-batch-size 4" in batch_problem(4, 16, flag="--rm-batch-size")


def test_rm_on_a_small_export_fails_at_once_and_leaves_no_folder(tiny_model_dir, prefs, tmp_path, capsys):
    out = tmp_path / "rm-human"
    assert main(["rm", "--model", str(tiny_model_dir), "--data", str(prefs), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "prefs.jsonl holds 5 preferences, fewer than one batch of 16: pass --batch-size 4" in err, err
    assert not out.exists()  # the retry is not refused as "already holds a run"
    assert main(["rm", "--model", str(tiny_model_dir), "--data", str(prefs), "--out", str(out), "--batch-size", "4",
                 "--max-length", "64", "--precision", "fp32", "--no-progress", "--save-every", "0"]) == 0
    assert (out / "model").is_dir()


def test_every_training_stage_checks_its_batch_before_loading(tiny_model_dir, prefs, tmp_path):
    model = str(tiny_model_dir)
    demos = write_rows(tmp_path / "demos.jsonl", [{"prompt": "Hi", "completion": " there"}] * 3)
    prompts = write_rows(tmp_path / "prompts.jsonl", [{"prompt": f"Once {i}"} for i in range(3)])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(["Once upon a time there was a cat who liked the sun."] * 12), encoding="utf-8")
    refused = [("sft", SFTConfig(model=model, data=str(demos)), "3 demonstrations"),
               ("rm", RewardConfig(model=model, data=str(prefs)), "5 preferences"),
               ("dpo", DPOConfig(model=model, data=str(prefs)), "5 comparisons"),
               ("dpo", DPOConfig(model=model, data=str(prefs), loss="kto", batch_size=16), "10 completions"),
               ("ppo", PPOConfig(model=model, data=str(prompts), reward=GOLD), "3 prompts"),
               ("pretrain", PretrainConfig(data=str(corpus)), "2 blocks of --max-length 256 tokens at most")]
    for command, cfg, said in refused:
        with pytest.raises(ValueError, match="fewer than one batch") as err:
            check_inputs(command, cfg)
        assert said in str(err.value) and "--batch-size" in str(err.value), (command, str(err.value))
    check_inputs("rm", RewardConfig(model=model, data=str(prefs), batch_size=4))
    check_inputs("ppo", PPOConfig(model=model, data=str(prompts), reward=GOLD, batch_size=2))
    # online DPO sizes each round's batch to the pairs it labelled: only the division among processes counts
    check_inputs("dpo", DPOConfig(model=model, data=str(prompts), online=True, labeler=GOLD))


def test_process_count_is_part_of_the_check(tiny_model_dir, prefs, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="does not divide among 2 processes"):
        check_inputs("rm", RewardConfig(model=str(tiny_model_dir), data=str(prefs), batch_size=3))
    with pytest.raises(ValueError, match="over 2 processes: pass --batch-size 4"):
        check_inputs("rm", RewardConfig(model=str(tiny_model_dir), data=str(prefs), batch_size=8))


def test_stages_called_directly_refuse_before_writing(tiny_model_dir, demonstrations_file, tmp_path):
    """From Python (rlhf iterate and the demo call the stages' run directly): the same check, exact
    where only tokenizing tells (packed rows), and no run directory."""
    from rlhf.train import ppo, sft

    out = tmp_path / "sft"
    # 24 demonstrations pack into a few rows of 1024 tokens: fewer than a batch of 16
    with pytest.raises(ValueError, match=r"packed rows of --max-length 1024 \(from 24 demonstrations\), fewer than "
                                         r"one batch of 16: pass --batch-size \d"):
        sft.run(SFTConfig(model=str(tiny_model_dir), data=str(demonstrations_file), out=str(out), packing=True,
                          max_length=1024, progress=False))
    assert not out.exists()
    prompts = write_rows(tmp_path / "prompts.jsonl", [{"prompt": "Once"}] * 3)
    with pytest.raises(ValueError, match="prompts.jsonl holds 3 prompts"):
        ppo.run(PPOConfig(model=str(tiny_model_dir), data=str(prompts), reward=GOLD, out=str(tmp_path / "ppo")))
    assert not (tmp_path / "ppo").exists()


def test_a_run_that_fails_at_its_start_leaves_no_folder(tiny_model_dir, demonstrations_file, tmp_path, monkeypatch,
                                                        capsys):
    from rlhf.train import sft

    def broken(*args, **kwargs):
        raise ValueError("the model would not load")

    monkeypatch.setattr(sft, "load_policy", broken)  # fails after the run directory was made
    out = tmp_path / "run"
    assert main(["sft", "--model", str(tiny_model_dir), "--data", str(demonstrations_file), "--out", str(out)]) == 1
    assert "the model would not load" in capsys.readouterr().err
    assert not out.exists()
    # an earlier run's directory is never removed, whatever happens to the new run
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["sft", "--model", str(tiny_model_dir), "--data", str(demonstrations_file), "--out", str(out),
                 "--overwrite"]) == 1
    assert out.is_dir()
