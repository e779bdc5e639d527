"""A rank that dies (SIGKILL) mid-run: the other exits within seconds with one line that says a
peer stopped and how to continue, the launcher names the dead rank, and --resume ends where an
uninterrupted run ends."""

from __future__ import annotations

import signal
import subprocess
import time

import psutil
import torch
from safetensors.torch import load_file

from dist_launch import command, environment, needs_gloo, resumable_sft_args, run

pytestmark = needs_gloo



def test_a_dead_rank_stops_the_run_fast_and_it_resumes(tiny_model_dir, demonstrations_file, tmp_path):
    straight = tmp_path / "straight"
    run(resumable_sft_args(tiny_model_dir, demonstrations_file, straight, "--dist-timeout", "60"))

    out = tmp_path / "killed"
    args = resumable_sft_args(tiny_model_dir, demonstrations_file, out, "--dist-timeout", "60")
    proc = subprocess.Popen(command(args, nproc=2), env=environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while not (out / "checkpoints" / "step-5").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    ranks = psutil.Process(proc.pid).children(recursive=True)
    victim = next(r for r in ranks if r.environ().get("RANK") == "1")
    killed_at = time.perf_counter()
    victim.send_signal(signal.SIGKILL)
    output, _ = proc.communicate(timeout=120)
    seconds = time.perf_counter() - killed_at
    assert proc.returncode != 0 and seconds < 60, output[-2000:]
    assert "rank      : 1" in output and "SIGKILL" in output  # the launcher names the dead rank
    assert "rlhf sft (rank 0): another process of this run stopped" in output and "--resume" in output
    assert not (out / "model").exists()

    run(resumable_sft_args(tiny_model_dir, demonstrations_file, out, "--resume", "--dist-timeout", "60"), nproc=2)
    expected = load_file(str(straight / "model" / "model.safetensors"))
    got = load_file(str(out / "model" / "model.safetensors"))
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-5)
    print(f"rank 0 and the launcher exited {seconds:.1f} s after rank 1 was killed")
