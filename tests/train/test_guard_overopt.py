"""The over-optimisation guard's tracker on scripted runs (no model), and on a tiny real `rlhf ppo`
run whose reward is a length hack: the guard warns, keeps best_guard/ and stops the run."""

import dataclasses
import json

import pytest
import torch

from rlhf.eval.overopt import THRESHOLDS, StepSample
from rlhf.train.guard_overopt import BEST_DIR, OverOptGuard

STABLE_UNTIL = 12


def scripted_step(t: int) -> StepSample:
    """Step t of a run that is healthy up to STABLE_UNTIL, then drifts: responses grow 4 tokens a
    step, stop ending with EOS and earn more reward the longer they are (a length hack)."""
    drift = max(0, t - STABLE_UNTIL)
    rewards = tuple((j * 7 % 5) / 5 + 0.2 * drift for j in range(8))
    lengths = tuple(20 + (j * 3 % 4) + (4 * drift if j % 2 else 0) for j in range(8))  # half the responses grow
    ended = tuple(j >= 2 * drift for j in range(8))
    if drift:  # the grown responses get the extra reward: reward now follows length
        rewards = tuple(r + (0.3 * drift if j % 2 else 0) for j, r in enumerate(rewards))
    return StepSample(rewards=rewards, lengths=lengths, ended=ended, repetition=0.05, distinct=0.9)


def run_script(guard: OverOptGuard, steps: range) -> dict[int, dict]:
    return {t: guard.observe(t, scripted_step(t))[0] for t in steps}


def test_no_warning_while_healthy_and_one_once_the_run_drifts(capsys):
    guard = OverOptGuard(window=5, patience=2)
    metrics = run_script(guard, range(1, 31))
    assert all("guard/score" not in metrics[t] for t in range(1, 5))  # the baseline is not complete yet
    assert "guard/length" in metrics[1] and "guard/eos_rate" in metrics[1]
    first = guard.warnings[0]
    assert STABLE_UNTIL < first["step"] <= STABLE_UNTIL + 6, guard.warnings
    assert {w["signal"] for w in guard.warnings} >= {"eos_drop", "length_drift", "length_reward_corr"}
    for w in guard.warnings:
        assert w["value"] >= w["threshold"] == THRESHOLDS[w["signal"]] and w["signal"] in w["message"]
    assert len({w["signal"] for w in guard.warnings}) == len(guard.warnings)  # each warns once while it stays up
    printed = capsys.readouterr().err.splitlines()
    assert sum(line.startswith("guard: step ") for line in printed) == len(guard.warnings)
    # the best guard score is before the drift set off alarms, not at the top of the hacked proxy
    assert guard.best_step <= first["step"] and guard.best_step < 30
    summary = guard.summary()
    assert summary["first_warning_step"] == first["step"] and summary["stopped_early"] is None


def test_patience_delays_the_warning_until_a_signal_stays_past_its_threshold():
    guard = OverOptGuard(window=5, patience=3)
    metrics = run_script(guard, range(1, 31))
    past = [t for t in sorted(metrics) if metrics[t].get("guard/eos_drop", 0) >= THRESHOLDS["eos_drop"]]
    warned = next(w["step"] for w in guard.warnings if w["signal"] == "eos_drop")
    assert warned == past[2] and past[:3] == [past[0], past[0] + 1, past[0] + 2]


def test_thresholds_can_be_raised_or_turned_off():
    quiet = {f"{name}=0" for name in THRESHOLDS}
    guard = OverOptGuard(window=5, patience=2, thresholds=tuple(quiet))
    run_script(guard, range(1, 31))
    assert guard.warnings == []
    default, raised = OverOptGuard(window=5, patience=2), OverOptGuard(window=5, patience=2, thresholds=("eos_drop=0.9",))
    run_script(default, range(1, 31))
    run_script(raised, range(1, 31))
    eos_step = {name: next(w["step"] for w in g.warnings if w["signal"] == "eos_drop")
                for name, g in (("default", default), ("raised", raised))}
    assert eos_step["raised"] > eos_step["default"]


def test_stop_on_overoptimisation_names_the_step_and_the_signal():
    guard = OverOptGuard(window=5, patience=2, stop=True)
    for t in range(1, 31):
        guard.observe(t, scripted_step(t))
        if guard.stop_reason:
            break
    assert guard.stop_reason["step"] == t == guard.warnings[0]["step"]
    assert guard.stop_reason["signal"] == guard.warnings[0]["signal"] and "over-optimising" in guard.stop_reason["reason"]


def test_a_resumed_guard_continues_exactly(tmp_path):
    straight = OverOptGuard(window=5, patience=2)
    expected = run_script(straight, range(1, 31))
    first = OverOptGuard(window=5, patience=2)
    run_script(first, range(1, 15))
    torch.save({"overopt_guard": first.state_dict()}, tmp_path / "state.pt")  # as a checkpoint holds it
    resumed = OverOptGuard(window=5, patience=2)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True)["overopt_guard"])
    assert run_script(resumed, range(15, 31)) == {t: expected[t] for t in range(15, 31)}
    assert resumed.summary() == straight.summary()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="needs the guard"):
        OverOptGuard(window=0, stop=True)
    with pytest.raises(ValueError, match="NAME one of"):
        OverOptGuard(window=5, thresholds=("lengthiness=2",))
    off = OverOptGuard(window=0)
    assert off.observe(1, scripted_step(1)) == ({}, False) and off.summary() == {"enabled": False}


# ---------------------------------------------------------------- a real run

LENGTH_HACK = """
def utf8_bytes(prompts, responses):
    return [float(len(r.encode("utf-8"))) for r in responses]
"""


@pytest.fixture
def length_reward(tmp_path, monkeypatch):
    (tmp_path / "guard_test_rewards.py").write_text(LENGTH_HACK, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "guard_test_rewards:utf8_bytes"


def test_stop_on_overoptimisation_stops_a_ppo_run_rewarding_length(tiny_model_dir, tmp_path, length_reward):
    from rlhf.config import PPOConfig
    from rlhf.models.load import load_causal_lm
    from rlhf.train import ppo

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Once upon a time\nThe dog was\nTom had a red ball.\nSue liked\n", encoding="utf-8")
    out = tmp_path / "run"
    cfg = PPOConfig(model=str(tiny_model_dir), data=str(prompts), out=str(out), reward=length_reward, algo="rloo",
                    num_samples=4, max_steps=8, batch_size=4, minibatch_size=16, max_new_tokens=24, max_length=64,
                    lr=1e-3, precision="fp32", save_every=0, samples_every=0, progress=False, seed=3,
                    guard_window=2, guard_patience=1, stop_on_overoptimisation=True)
    ppo.run(cfg)
    summary = json.loads((out / "summary.json").read_text())
    stop = summary["stopped_early"]
    assert stop is not None and stop["step"] < 8 and summary["steps"] == stop["step"]
    assert stop["signal"] == summary["guard"]["warnings"][0]["signal"]
    assert "length" in stop["signal"], summary["guard"]["warnings"]  # the hack is caught as a length signal
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == stop["step"] and "guard/score" in lines[-1]
    assert lines[-1][f"guard/{stop['signal']}"] >= summary["guard"]["thresholds"][stop["signal"]]
    best = load_causal_lm(str(out / BEST_DIR))  # an ordinary model directory
    assert all(torch.isfinite(p).all() for p in best.parameters())
    assert summary["guard"]["best_step"] is not None and (out / "model" / "config.json").exists()


def test_online_dpo_stops_after_the_round_the_guard_warns_on(tiny_model_dir, tmp_path, length_reward):
    from rlhf.config import DPOConfig
    from rlhf.train import dpo

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Once upon a time\nThe dog was\nTom had a red ball.\nSue liked\n", encoding="utf-8")
    out = tmp_path / "online"
    cfg = DPOConfig(model=str(tiny_model_dir), data=str(prompts), out=str(out), online=True, labeler=length_reward,
                    rounds=2, prompts_per_round=4, samples_per_prompt=4, max_new_tokens=16, max_length=48,
                    batch_size=4, lr=1e-3, warmup_steps=0, save_every=0, kl_prompts=2, progress=False,
                    precision="fp32", stop_on_overoptimisation=True)
    dpo.run(cfg)
    summary = json.loads((out / "summary.json").read_text())
    stop = summary["stopped_early"]
    assert stop is not None and stop["step"] == 1 and summary["rounds"] == 1, (out / "metrics.jsonl").read_text()
    assert "length" in stop["signal"], summary["guard"]["warnings"]
    round_lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    round_lines = [line for line in round_lines if "labels" in line]
    assert len(round_lines) == stop["step"] and f"guard/{stop['signal']}" in round_lines[-1]
    assert (out / BEST_DIR / "config.json").exists() and (out / "rounds" / "round-0" / "guard_sample.json").exists()

    # --resume with more rounds: the guard's state comes back with the run's checkpoint, so the run
    # stops again at once, training no further round
    dpo.run(dataclasses.replace(cfg, rounds=3, resume=True))
    again = json.loads((out / "summary.json").read_text())
    assert again["stopped_early"] == stop and again["rounds"] == 1 and again["guard"] == summary["guard"]
    assert not (out / "rounds" / "round-1").exists()
