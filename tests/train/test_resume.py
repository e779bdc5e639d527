"""A run killed with SIGKILL between checkpoints resumes and ends where an uninterrupted run ends."""

import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file


def sft_command(model, data, out, *extra):
    return [sys.executable, "-m", "rlhf.cli", "sft", "--model", str(model), "--data", str(data), "--out", str(out),
            "--precision", "fp32", "--max-steps", "60", "--batch-size", "4", "--max-length", "48", "--lr", "1e-3",
            "--save-every", "10", "--log-every", "5", "--no-progress", "--seed", "3", *extra]


def test_sigkill_then_resume_matches_uninterrupted(tiny_model_dir, demonstrations_file, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight = tmp_path / "straight"
    subprocess.run(sft_command(tiny_model_dir, demonstrations_file, straight), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(sft_command(tiny_model_dir, demonstrations_file, killed), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = killed / "checkpoints" / "step-10"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "model").exists()

    resumed = subprocess.run(sft_command(tiny_model_dir, demonstrations_file, killed, "--resume"), env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a = load_file(str(straight / "model" / "model.safetensors"))
    b = load_file(str(killed / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6)
    steps = [line for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 12  # one line every 5 steps, none duplicated by the replay


def test_existing_run_needs_resume_flag(tiny_model_dir, demonstrations_file, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints" / "step-1").mkdir(parents=True)
    result = subprocess.run(sft_command(tiny_model_dir, demonstrations_file, out), capture_output=True, text=True)
    assert result.returncode == 1 and "--resume" in result.stderr
