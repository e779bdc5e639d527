"""`fit` itself over two processes (gloo), on a linear model with a per-"token" loss whose counts
differ between the ranks: the losses and weights of one process, one log line per step, and
checkpoints that resume with the other process count."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from dist_launch import environment, free_port, needs_gloo

pytestmark = needs_gloo
SCRIPT = str(Path(__file__).parent / "fit_script.py")


def fit_run(out: Path, nproc: int, *extra: str) -> None:
    launcher = [] if nproc == 1 else ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                                      "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    result = subprocess.run([sys.executable, *launcher, SCRIPT, str(out), *extra], env=environment(),
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def weights(out: Path) -> dict:
    return torch.load(out / "weights.pt", weights_only=True)


def test_two_processes_match_one_and_checkpoints_resume_with_either(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    fit_run(one, 1)
    fit_run(two, 2)
    assert len(losses(two)) == 4  # rank 0 alone logs
    for a, b in zip(losses(one), losses(two)):
        assert abs(a - b) < 1e-6 * max(1.0, abs(a))
    assert json.loads((two / "metrics.jsonl").read_text().splitlines()[0])["share"] == 2.0  # each rank: 2 of 4
    for name, value in weights(one).items():
        torch.testing.assert_close(weights(two)[name], value, rtol=0, atol=1e-6)

    # the step-2 checkpoint of each run, continued with the other process count
    for source, nproc in ((two, 1), (one, 2)):
        resumed = tmp_path / f"{source.name}-resumed-x{nproc}"
        shutil.copytree(source, resumed)
        (resumed / "weights.pt").unlink()
        fit_run(resumed, nproc, "resume")
        for name, value in weights(one).items():
            torch.testing.assert_close(weights(resumed)[name], value, rtol=0, atol=1e-6)
        assert len(losses(resumed)) == 4
