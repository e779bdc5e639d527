"""Start `rlhf` as one process or as several (torchrun, accelerate launch) on the CPU, over gloo."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

needs_gloo = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="needs torch.distributed with the gloo backend",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(args: list[str], nproc: int = 1, launcher: str = "torchrun", config: str = "cpu-2proc.yaml") -> list[str]:
    """`python -m rlhf ARGS` as one process, or under torchrun / accelerate launch (with
    configs/accelerate/CONFIG) with `nproc`."""
    if nproc == 1:
        return [sys.executable, "-m", "rlhf", *args]
    port = str(free_port())
    if launcher == "accelerate":  # the CPU config of configs/accelerate, as the README shows it
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(ROOT / "configs" / "accelerate" / config), "--num_processes", str(nproc),
                "--main_process_port", port, "-m", "rlhf", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
            "--master_port", port, "-m", "rlhf", *args]


def environment() -> dict:
    # One thread per process: two processes share the two cores of a laptop-sized machine.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run(args: list[str], nproc: int = 1, launcher: str = "torchrun", timeout: float = 1800,
        config: str = "cpu-2proc.yaml") -> subprocess.CompletedProcess:
    result = subprocess.run(command(args, nproc, launcher, config), env=environment(), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args[:1])} x{nproc} failed:\n{result.stderr[-3000:]}"
    return result


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def kill_two_process_run(args: list[str], out: Path, at_step: int) -> None:
    """Start `rlhf ARGS` on two processes and SIGKILL every process once `out` holds the
    checkpoint of step `at_step`, before the run can finish."""
    import psutil

    proc = subprocess.Popen(command(args, nproc=2), env=environment(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first = out / "checkpoints" / f"step-{at_step}"
    deadline = time.time() + 1800
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    # torchrun starts each rank in a session of its own: kill the ranks by pid, then the launcher
    ranks = psutil.Process(proc.pid).children(recursive=True)
    for rank in ranks:
        rank.send_signal(signal.SIGKILL)
    psutil.wait_procs(ranks, timeout=60)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert first.exists() and not (out / "model").exists()


EQUALITY_STEPS = 4  # the steps of the 2-vs-1 process equality runs


def equality_args(model, data, out) -> list[str]:
    """The flags every "2 processes equal 1" run shares: fp32, a fixed seed, every step logged, no checkpoint."""
    return ["--model", str(model), "--data", str(data), "--out", str(out), "--precision", "fp32", "--seed", "5",
            "--max-steps", str(EQUALITY_STEPS), "--max-length", "32", "--lr", "1e-3", "--warmup-steps", "0",
            "--log-every", "1", "--save-every", "0", "--no-progress"]


def resumable_sft_args(model, data, out, *extra, steps: int = 30) -> list[str]:
    """`rlhf sft` for the kill-and-resume tests: a checkpoint and a log line every 5 steps."""
    return ["sft", "--model", str(model), "--data", str(data), "--out", str(out), "--precision", "fp32", "--seed", "3",
            "--max-steps", str(steps), "--batch-size", "4", "--max-length", "32", "--lr", "1e-3", "--save-every", "5",
            "--log-every", "5", "--no-progress", *extra]
