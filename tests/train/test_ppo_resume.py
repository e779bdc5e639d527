"""A PPO run killed with SIGKILL between checkpoints resumes and ends where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

RULE_SOURCE = """
def letter_e(prompts, responses):
    return [r.count("e") / 5 for r in responses]
"""


def ppo_command(model, prompts, out, *extra):
    return [sys.executable, "-m", "rlhf.cli", "ppo", "--model", str(model), "--data", str(prompts), "--out", str(out),
            "--reward", "ppo_kill_rewards:letter_e", "--precision", "fp32", "--max-steps", "12", "--batch-size", "4",
            "--minibatch-size", "2", "--max-new-tokens", "8", "--max-length", "64", "--lr", "1e-3",
            "--critic-lr", "1e-3", "--kl-target", "0.05", "--kl-horizon", "20", "--save-every", "3",
            "--samples-every", "5", "--no-progress", "--seed", "3", *extra]


def test_ppo_sigkill_then_resume_matches_uninterrupted(tiny_model_dir, tmp_path):
    (tmp_path / "ppo_kill_rewards.py").write_text(RULE_SOURCE, encoding="utf-8")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Story {i}: Once upon a time"}) + "\n" for i in range(10)))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    straight = tmp_path / "straight"
    done = subprocess.run(ppo_command(tiny_model_dir, prompts, straight), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(ppo_command(tiny_model_dir, prompts, killed), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = killed / "checkpoints" / "step-6"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "model").exists()

    resumed = subprocess.run(ppo_command(tiny_model_dir, prompts, killed, "--resume"), env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a = load_file(str(straight / "model" / "model.safetensors"))
    b = load_file(str(killed / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6)
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # one line per step, none duplicated by the replay
    kl_coefs = [json.loads(line)["kl_coef"] for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert len(set(kl_coefs)) > 1  # the adaptive coefficient moved, and was restored on resume
    assert [json.loads(line)["kl_coef"] for line in (killed / "metrics.jsonl").read_text().splitlines()] == kl_coefs
