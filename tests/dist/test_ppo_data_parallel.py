"""`rlhf ppo` under two processes (gloo on the CPU) computes what one process computes at the same
global batch: the same samples (each row's sampling noise is seeded by its global index), the
same losses step by step and the same weights; and a two-process run killed with SIGKILL resumes
with one process and with two to the weights of an uninterrupted run.

PPO runs 4 epochs of minibatches of 2 of the 4 rows: some minibatches lie on one rank only, the
other then contributes nothing but its share of the all-reduces. GRPO's groups of 4 stay whole on
one rank, and its single optimiser step takes log pi_old from the update's own forward.
REINFORCE++ whitens over the global batch; DAPO keeps the groups whose rewards differ over the
whole round, sampling more rounds when too few do.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from dist_launch import kill_two_process_run, metrics, needs_gloo, run

pytestmark = needs_gloo

STEPS = 4
RULE_SOURCE = """
def letter_e(prompts, responses):
    return [r.count("e") / 5 for r in responses]
"""


@pytest.fixture
def ppo_inputs(tmp_path, monkeypatch):
    """A rule reward importable by every process, and 8 prompts of equal token length."""
    (tmp_path / "dp_rewards.py").write_text(RULE_SOURCE, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Story {i}: Once upon a time"}) + "\n" for i in range(8)))
    return prompts


def ppo_args(model, prompts, out, *extra) -> list[str]:
    return ["ppo", "--model", str(model), "--data", str(prompts), "--out", str(out), "--reward", "dp_rewards:letter_e",
            "--precision", "fp32", "--seed", "3", "--batch-size", "4", "--max-new-tokens", "8", "--max-length", "64",
            "--lr", "1e-3", "--critic-lr", "1e-3", "--no-progress", *extra]


def assert_same_weights(a_dir, b_dir, atol=1e-4):
    a, b = load_file(str(a_dir / "model" / "model.safetensors")), load_file(str(b_dir / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=atol)


@pytest.mark.parametrize("algo, extra", [
    ("ppo", ["--minibatch-size", "2", "--kl-target", "0.05", "--kl-horizon", "20"]),
    ("grpo", []),
    ("reinforce++", ["--minibatch-size", "2"]),  # returns normalised over the global batch
    ("dapo", []),  # dynamic sampling: groups kept over the whole global round, then shared out again
])
def test_two_processes_match_one(algo, extra, tiny_model_dir, ppo_inputs, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = lambda out: ppo_args(tiny_model_dir, ppo_inputs, out, "--algo", algo, "--max-steps", str(STEPS),  # noqa: E731
                                "--log-every", "1", "--save-every", "0", "--samples-every", "2", *extra)
    run(args(one))
    run(args(two), nproc=2)
    first, second = metrics(one), metrics(two)
    assert [m["step"] for m in second] == list(range(1, STEPS + 1))  # rank 0 alone logs
    for a, b in zip(first, second):
        assert b["tokens"] == a["tokens"] and b["response_length"] == a["response_length"]  # the same samples
        for key in ("loss", "reward", "kl", "kl_coef", "policy_loss", "entropy", "advantage_std"):
            assert b[key] == pytest.approx(a[key], abs=1e-4), (key, a, b)
    assert first[-1]["loss"] != first[0]["loss"] and any(m["reward"] != first[0]["reward"] for m in first)
    assert_same_weights(one, two)
    samples = lambda out: [json.loads(line)["response"] for line in (out / "samples.jsonl").read_text().splitlines()]  # noqa: E731
    assert samples(one) == samples(two)  # the batch's first prompts, gathered from both ranks


def test_two_process_run_killed_resumes_with_one_and_with_two(tiny_model_dir, ppo_inputs, tmp_path):
    args = lambda out, *more: ppo_args(tiny_model_dir, ppo_inputs, out, "--algo", "ppo", "--max-steps", "12",  # noqa: E731
                                       "--minibatch-size", "2", "--kl-target", "0.05", "--kl-horizon", "20",
                                       "--save-every", "3", "--log-every", "1", "--samples-every", "0", *more)
    straight = tmp_path / "straight"
    run(args(straight))

    killed = tmp_path / "killed"
    kill_two_process_run(args(killed), killed, at_step=3)
    copy = tmp_path / "killed-copy"
    shutil.copytree(killed, copy)

    run(args(killed, "--resume"), nproc=1)
    run(args(copy, "--resume"), nproc=2)
    kl_coefs = [m["kl_coef"] for m in metrics(straight)]
    assert len(set(kl_coefs)) > 1  # the adaptive coefficient moved, and is restored on resume
    for resumed in (killed, copy):
        assert_same_weights(straight, resumed)
        assert [m["step"] for m in metrics(resumed)] == list(range(1, 13))  # no line lost or written twice
        assert [m["kl_coef"] for m in metrics(resumed)] == pytest.approx(kl_coefs, abs=1e-6)
