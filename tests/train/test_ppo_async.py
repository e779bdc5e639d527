"""`rlhf ppo --async-staleness K` on the tiny model: K=0 is the synchronous loop, K>=1 trains on
samples a worker process drew ahead (staleness logged), a run killed with SIGKILL resumes to the
weights of the uninterrupted async run, and what async does not cover is refused up front."""

import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from rlhf.config import PPOConfig
from rlhf.rollout.async_sampler import AsyncSampler
from rlhf.train import ppo

RULE_SOURCE = """
def letter_e(prompts, responses):
    return [r.count("e") / 5 for r in responses]
"""
PROMPTS = ["Once upon a time", "The dog was", "Tom had a red ball.", "Sue liked", "The cat", "One day, Lily",
           "Ben and Mia", "The sun"]


@pytest.fixture
def rule_dir(tmp_path, monkeypatch):
    (tmp_path / "async_rewards.py").write_text(RULE_SOURCE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))  # the worker process gets this sys.path too (spawn)
    return tmp_path


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS), encoding="utf-8")
    return path


def config(model, prompts, out, **overrides):
    base = dict(model=str(model), data=str(prompts), out=str(out), reward="async_rewards:letter_e", max_steps=3,
                batch_size=4, minibatch_size=4, max_new_tokens=8, max_length=64, lr=1e-3, critic_lr=1e-3,
                precision="fp32", save_every=0, progress=False, samples_every=2, seed=1)
    return PPOConfig(**{**base, **overrides})


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_staleness_0_is_the_synchronous_loop(tiny_model_dir, prompts_file, rule_dir, tmp_path, monkeypatch):
    def no_worker(self):
        raise AssertionError("--async-staleness 0 started a worker")

    monkeypatch.setattr(AsyncSampler, "start", no_worker)
    out = tmp_path / "sync"
    ppo.run(config(tiny_model_dir, prompts_file, out, algo="grpo"))
    assert all("async/staleness" not in line for line in metrics(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["async_staleness"] == 0 and "mean_staleness" not in summary


@pytest.mark.parametrize("algo, staleness, logged", [("grpo", 1, [0, 1, 1]), ("ppo", 2, [0, 1, 2, 2])])
def test_async_run_trains_on_stale_samples(algo, staleness, logged, tiny_model_dir, prompts_file, rule_dir,
                                           tmp_path):
    """grpo: one update step, whose forward is pi_old (the single-forward path); ppo: its epochs
    and the critic, pi_old from the trainer's own forward. Both apply the TIS weight."""
    out = tmp_path / algo
    model_dir = ppo.run(config(tiny_model_dir, prompts_file, out, algo=algo, async_staleness=staleness,
                               max_steps=len(logged)))
    before, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(model_dir / "model.safetensors"))
    assert any(not torch.equal(before[name], after[name]) for name in before)
    lines = metrics(out)
    assert [line["step"] for line in lines] == list(range(1, len(logged) + 1))
    assert [line["async/staleness"] for line in lines] == logged
    for line in lines:
        assert math.isfinite(line["loss"]) and math.isfinite(line["logprob_gap"])
        assert 0 <= line["tis/capped_share"] <= 1
    assert lines[0]["logprob_gap"] < 1e-4  # step 0: sampled by the weights it trains (only numerics differ)
    assert lines[-1]["logprob_gap"] > 1e-4  # later: by older weights, the gap TIS corrects
    summary = json.loads((out / "summary.json").read_text())
    assert summary["async_staleness"] == staleness and summary["mean_staleness"] == pytest.approx(sum(logged) / len(logged))
    assert summary["async_threads"]["learner"] >= 1 and summary["async_threads"]["sampler"] >= 1
    assert (out / "config.yaml").exists() and (out / "model" / "tokenizer.json").exists()
    assert [json.loads(s)["step"] for s in (out / "samples.jsonl").read_text().splitlines()][:1] == [1]
    assert not multiprocessing.active_children()  # the worker ended with the run


def test_tis_cap_0_trains_on_stale_samples_uncorrected_and_says_so(tiny_model_dir, prompts_file, rule_dir, tmp_path,
                                                                     capsys):
    """The ablation: the same async run with and without the truncated weight ends at other
    weights (the stale samples' ratios are not 1), and the uncorrected one says so on stderr."""
    corrected = ppo.run(config(tiny_model_dir, prompts_file, tmp_path / "tis", algo="grpo", async_staleness=1))
    assert "no importance correction" not in capsys.readouterr().err
    plain = ppo.run(config(tiny_model_dir, prompts_file, tmp_path / "plain", algo="grpo", async_staleness=1,
                           tis_cap=0.0))
    assert "no importance correction" in capsys.readouterr().err
    a, b = load_file(str(corrected / "model.safetensors")), load_file(str(plain / "model.safetensors"))
    assert any(not torch.equal(a[name], b[name]) for name in a)


@pytest.mark.parametrize("overrides, env, message", [
    (dict(rollout_engine="vllm"), {}, "--rollout-engine vllm is synchronous"),
    ({}, {"WORLD_SIZE": "2"}, "launch rlhf ppo without torchrun"),
])
def test_what_async_does_not_cover_is_refused_before_the_run_directory(overrides, env, message, tiny_model_dir,
                                                                       prompts_file, rule_dir, tmp_path, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "refused"
    with pytest.raises(ValueError, match=message):
        ppo.run(config(tiny_model_dir, prompts_file, out, async_staleness=1, **overrides))
    assert not out.exists()


def ppo_command(model, prompts, out, *extra):
    return [sys.executable, "-m", "rlhf.cli", "ppo", "--model", str(model), "--data", str(prompts), "--out", str(out),
            "--reward", "async_rewards:letter_e", "--precision", "fp32", "--max-steps", "9", "--batch-size", "4",
            "--minibatch-size", "2", "--max-new-tokens", "8", "--max-length", "64", "--lr", "1e-3",
            "--critic-lr", "1e-3", "--kl-target", "0.05", "--kl-horizon", "20", "--save-every", "3",
            "--samples-every", "5", "--no-progress", "--seed", "3", "--async-staleness", "2", *extra]


def children_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for a reaper that a container may not have)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sigkill_then_resume_matches_the_uninterrupted_async_run(tiny_model_dir, prompts_file, rule_dir, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": f"{rule_dir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    straight = tmp_path / "straight"
    done = subprocess.run(ppo_command(tiny_model_dir, prompts_file, straight), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(ppo_command(tiny_model_dir, prompts_file, killed), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = killed / "checkpoints" / "step-3"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    workers = children_of(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "model").exists() and workers  # the worker (and its resource tracker) were running
    deadline = time.time() + 60
    while any(running(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(running(pid) for pid in workers), "the worker outlived its killed parent"
    state = torch.load(sorted((killed / "checkpoints").glob("step-*"))[-1] / "state.pt", weights_only=True)
    assert state["sampler"]["ready"]  # the rollouts sampled ahead, kept as plain values

    resumed = subprocess.run(ppo_command(tiny_model_dir, prompts_file, killed, "--resume"), env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_file(str(straight / "model" / "model.safetensors"))
    b = load_file(str(killed / "model" / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6)
    assert [line["step"] for line in metrics(killed)] == list(range(1, 10))
    assert [line["async/staleness"] for line in metrics(killed)] == [line["async/staleness"] for line in metrics(straight)] \
        == [0, 1, 2, 2, 2, 2, 2, 2, 2]
    assert [line["kl_coef"] for line in metrics(killed)] == [line["kl_coef"] for line in metrics(straight)]


def test_ctrl_c_ends_the_run_and_its_worker_without_a_traceback(tiny_model_dir, prompts_file, rule_dir, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": f"{rule_dir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = tmp_path / "run"
    command = ppo_command(tiny_model_dir, prompts_file, out)
    command[command.index("--max-steps") + 1] = "100000"
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "step-3").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    workers = children_of(proc.pid)
    proc.send_signal(signal.SIGINT)  # to the learner alone: it must end its worker itself
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("rlhf ppo: interrupted at step ")
    deadline = time.time() + 30
    while any(running(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert workers and not any(running(pid) for pid in workers)


@pytest.mark.parametrize("shift, weight", [(0.0, 1.0), (-10.0, 2.0)])
def test_the_single_forward_update_weights_by_the_behaviour_policy(shift, weight, tiny_model_dir):
    """GRPO's one update step takes pi_old from its own forward (the proximal policy, decoupled
    PPO) and still weights each token by min(pi_old / pi_behaviour, C): behaviour log-probs equal
    to the learner's give weight 1 and a policy loss of -mean(A) = -1; behaviour log-probs 10 nats
    lower give e^10 capped at C = 2, twice the loss."""
    import contextlib

    from rlhf.models.load import load_causal_lm
    from rlhf.rollout.experience import Experience
    from rlhf.rollout.logprobs import response_logprobs
    from rlhf.data.records import Rollout
    from rlhf.train.ppo_options import resolve_options
    from rlhf.train.ppo_update import update

    actor = load_causal_lm(str(tiny_model_dir))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])
    ones = torch.ones(2, 3, dtype=torch.long)
    rollout = Rollout(ids[:, :3], ones, ids[:, 3:], ones, torch.zeros(2, 3), torch.ones(2, dtype=torch.bool))
    with torch.no_grad():
        behaviour = response_logprobs(actor, rollout) + shift
    rollout.logprobs = behaviour
    opts = resolve_options(PPOConfig(algo="grpo", kl_coef=0.0, minibatch_size=2, batch_size=1, tis_cap=2.0))
    exp = Experience(rollout, None, torch.zeros(2, 3), None, torch.zeros(2), None)  # old_logp None: the update's forward
    optimiser = torch.optim.SGD(actor.parameters(), lr=0.0)
    stats, _, _ = update(actor, None, exp, torch.ones(2, 3), None, 0.0, optimiser, None, [], opts,
                         contextlib.nullcontext, torch.Generator().manual_seed(0))
    assert stats["policy_loss"] == pytest.approx(-weight, abs=1e-5)
    assert stats["ratio_first"] == pytest.approx(1.0, abs=1e-6)  # pi_old is the learner's own forward
