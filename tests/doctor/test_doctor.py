"""`rlhf doctor`: passes on a healthy tiny setup with every check in its table, and fails, naming
the check, on a ratio that is not 1 at lr 0, on a resume that does not end where a straight run
ends, and on a max_length that cuts most prompts. Plus the batch arithmetic by hand."""

from __future__ import annotations

import json
import re

import pytest
import torch

from rlhf.cli import main
from rlhf.config import PPOConfig, SFTConfig
from rlhf.doctor import arithmetic
from rlhf.doctor.checks import FAIL, INFO, PASS, WARN, share_check
from rlhf.doctor.lengths import Lengths, packed_rows

GOLD = "rlhf.demo.oracle:gold_reward"
EVERY_CHECK = ["inputs", "batch", "tokens per step", "steps", "prompts cut by max_length", "chat template round trip",
               "time", "memory", "kill and resume"]


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Story {i}: Once upon a time"}) + "\n" for i in range(12)))
    return path


def ppo_args(model, prompts, *extra):
    return ["doctor", "ppo", "--model", str(model), "--data", str(prompts), "--reward", GOLD, "--precision", "fp32",
            "--batch-size", "4", "--minibatch-size", "2", "--max-new-tokens", "6", "--max-length", "48",
            "--lr", "1e-3", "--critic-lr", "1e-3", "--out", "runs/never-written", *extra]


def sft_args(model, demos, *extra):
    return ["doctor", "sft", "--model", str(model), "--data", str(demos), "--precision", "fp32", "--batch-size", "4",
            "--max-length", "48", "--lr", "1e-3", "--warmup-steps", "0", "--out", "runs/never-written", *extra]


def table_rows(output: str) -> dict[str, str]:
    """check name -> result, from the printed table (columns are separated by two or more spaces)."""
    rows = {}
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line)
        if len(cells) >= 3 and cells[0] and cells[1] in (PASS, WARN, FAIL, INFO):
            rows[cells[0]] = cells[1]
    return rows


def failed_checks(output: str) -> list[str]:
    line = next((ln for ln in output.splitlines() if "check(s) failed:" in ln), "")
    return [name.strip() for name in line.split("failed:")[1].split(",")] if line else []


def test_healthy_ppo_passes_with_every_check(tiny_model_dir, prompts_file, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code = main(ppo_args(tiny_model_dir, prompts_file))
    out = capsys.readouterr().out
    assert code == 0, out
    assert set(table_rows(out)) == {*EVERY_CHECK, "ppo step at lr 0", "responses within max_new_tokens"}
    assert "bit for bit" in out and "ratio mean 1 " in out
    assert not (tmp_path / "runs").exists()  # the doctor never writes to --out


def test_healthy_sft_passes_with_every_check(tiny_model_dir, demonstrations_file, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code = main(sft_args(tiny_model_dir, demonstrations_file))
    out = capsys.readouterr().out
    assert code == 0, out
    assert set(table_rows(out)) == {*EVERY_CHECK, "responses cut by max_length"}
    assert not (tmp_path / "runs").exists()


def test_the_trial_runs_print_nothing_of_their_own(tiny_model_dir, demonstrations_file, capsys, monkeypatch, tmp_path):
    """Issue 27 item 8: the doctor printed its trial run's resume notice
    (`--resume: continuing /tmp/rlhf-doctor-.../killed from step 2`) among its own lines."""
    monkeypatch.chdir(tmp_path)
    assert main(sft_args(tiny_model_dir, demonstrations_file)) == 0
    captured = capsys.readouterr()
    assert "--resume" not in captured.out + captured.err and "rlhf-doctor-" not in captured.out + captured.err
    assert "kill and resume" in captured.out  # the check itself is still reported


def test_ratio_off_one_at_lr0_fails(tiny_model_dir, prompts_file, capsys, monkeypatch):
    """pi_old from the rollout at another temperature than the update's forward: a real bug class."""
    from rlhf.train import ppo

    original = ppo.response_logprobs
    monkeypatch.setattr(ppo, "response_logprobs",
                        lambda model, rollout, temperature, **kw: original(model, rollout, temperature * 1.5, **kw))
    code = main(ppo_args(tiny_model_dir, prompts_file, "--update-epochs", "2"))
    out = capsys.readouterr().out
    assert code == 1
    assert "ppo step at lr 0" in failed_checks(out)


def test_lr0_step_with_every_response_masked_warns_instead_of_failing(tiny_model_dir, prompts_file, capsys,
                                                                       monkeypatch, tmp_path):
    """--mask-truncated with responses that all hit max_new_tokens: the loss reads no token, every
    masked mean is 0 (ratio mean 0), which says nothing about the step; before, this FAILed as "ratio != 1"."""
    monkeypatch.chdir(tmp_path)
    args = ppo_args(tiny_model_dir, prompts_file, "--mask-truncated")
    args[args.index("--max-new-tokens") + 1] = "2"
    main(args)
    out = capsys.readouterr().out
    assert table_rows(out)["ppo step at lr 0"] == WARN, out
    assert "raise --max-new-tokens" in out


def test_resume_that_loses_the_optimiser_state_fails(tiny_model_dir, demonstrations_file, capsys, monkeypatch):
    monkeypatch.setattr(torch.optim.AdamW, "load_state_dict", lambda self, state: None)
    code = main(sft_args(tiny_model_dir, demonstrations_file))
    out = capsys.readouterr().out
    assert code == 1
    assert failed_checks(out) == ["kill and resume"]


def test_max_length_cutting_most_prompts_fails(tiny_model_dir, tmp_path, capsys):
    long_prompts = tmp_path / "long.jsonl"
    story = "Once upon a time there was a little cat that liked to play in the sun with the dog. " * 3
    long_prompts.write_text("".join(json.dumps({"prompt": f"{i}: {story}", "completion": " The end."}) + "\n"
                                    for i in range(12)))
    code = main(sft_args(tiny_model_dir, long_prompts, "--max-length", "24", "--max-steps", "1"))
    out = capsys.readouterr().out
    assert code == 1
    assert "prompts cut by max_length" in failed_checks(out)
    assert "12/12 examples lose the start of their prompt (100%)" in out


# ---------------------------------------------------------------- pieces, with hand-worked numbers


def test_share_check_verdicts():
    assert share_check("x", 0, 10, "cut").result == PASS
    assert share_check("x", 5, 10, "cut").result == WARN  # half is not most
    assert share_check("x", 6, 10, "cut").result == FAIL
    assert share_check("x", 10, 10, "cut", fail_above=None).result == WARN


def test_packed_rows_greedy():
    # max 10: [4, 5] | [6, 3] | [9] -> 3 rows
    assert packed_rows([4, 5, 6, 3, 9], 10) == 3


def test_offline_arithmetic_by_hand():
    # 26 examples, micro-batch 4 -> 6 micro-batches per epoch (2 left out); accum 2 -> 3 steps per epoch;
    # 2 epochs -> 6 steps; 20 tokens each -> 4 * 2 * 20 = 160 tokens per optimiser step.
    cfg = SFTConfig(model="m", data="d", batch_size=4, grad_accum=2, epochs=2.0, warmup_steps=0)
    plan = arithmetic.offline(cfg, Lengths(26, "examples", tokens=[20] * 26))
    assert plan.total_steps == 6
    rows = {c.name: c for c in plan.checks}
    assert "global batch 8 examples" in rows["batch"].detail
    assert rows["tokens per step"].detail.startswith("160 tokens per optimiser step")
    assert "3 steps per epoch (26 examples, 2 left out of each epoch)" in rows["steps"].detail
    assert rows["steps"].result == INFO
    warm = arithmetic.offline(SFTConfig(model="m", data="d", batch_size=4, grad_accum=2, epochs=2.0, warmup_steps=6),
                              Lengths(26, "examples", tokens=[20] * 26))
    assert {c.name: c for c in warm.checks}["steps"].result == WARN  # warm-up as long as the run


def test_ppo_arithmetic_by_hand():
    # 10 prompts, 4 per step x k=2 -> 8 sequences; minibatch 3 -> ceil(8/3) = 3 minibatches (the last of 2)
    # x 2 epochs = 6 optimiser steps; 2 rollout steps per epoch (2 prompts left out); 1 epoch -> 2 steps.
    from rlhf.train.ppo import resolve_options

    cfg = PPOConfig(model="m", data="d", reward="r", algo="grpo", batch_size=4, num_samples=2, minibatch_size=3,
                    update_epochs=2)
    plan = arithmetic.ppo(cfg, resolve_options(cfg), Lengths(10, "prompts", tokens=[5] * 10), response_tokens=7.0)
    rows = {c.name: c for c in plan.checks}
    assert plan.total_steps == 2
    assert rows["batch"].result == WARN and "= 6 optimiser steps per rollout step" in rows["batch"].detail
    assert rows["tokens per step"].detail.startswith("36 tokens per optimiser step")  # 3 x (5 + 7)
    assert "2 rollout steps per epoch (10 prompts, 2 left out of each epoch)" in rows["steps"].detail
    assert "= 12 optimiser steps" in rows["steps"].detail


def test_lr_zero_is_a_valid_config_and_negative_is_not():
    # The doctor's PPO step runs the stage's own config at lr 0 (dataclasses.replace validates it).
    assert SFTConfig(lr=0.0).lr == 0.0
    with pytest.raises(ValueError, match="lr"):
        SFTConfig(lr=-1e-4)
