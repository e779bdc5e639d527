"""rlhf.runtime.dist: free and transparent in one process, exact over two (gloo)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dist_launch import environment, free_port, needs_gloo
from rlhf.runtime import dist
from rlhf.train import loop


def test_one_process_is_rank_zero_of_one_and_collectives_return_their_input(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not dist.launched() and dist.rank() == 0 and dist.world_size() == 1 and dist.is_main()
    assert dist.sum_all([2.0, 3.0]) == [2.0, 3.0]
    assert dist.mean_all({"accuracy": 0.5}) == {"accuracy": 0.5}
    assert float(dist.aggregate(torch.tensor(6.0), 4)) == 1.5
    assert dist.rank_seed(11) == 11
    dist.barrier()
    dist.require_single_process("anything")
    assert dist.device("cpu") == torch.device("cpu")


def test_one_process_never_imports_accelerate():
    code = ("import sys, torch; from rlhf.runtime import dist; from rlhf.train import loop; "
            "dist.sum_all([1.0]); dist.barrier(); dist.sum_gradients([]); loop.BatchPlan(8, 4, 0).micro_batch(0); "
            "print('accelerate' in sys.modules)")
    env = {k: v for k, v in environment().items() if k != "WORLD_SIZE"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_not_yet_parallel_commands_and_sharding_configs_are_refused_under_a_launcher(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="rlhf generate runs in one process only"):
        dist.require_single_process("rlhf generate")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setattr(dist, "_STATE", None)
    with pytest.raises(ValueError, match="FSDP config"):
        dist.state()


def test_a_global_batch_that_does_not_divide_among_the_processes_is_refused(monkeypatch):
    monkeypatch.setattr(dist, "world_size", lambda: 2)
    with pytest.raises(ValueError, match="batch size 3 does not divide among 2 processes"):
        loop.BatchPlan(10, 3, seed=0)


@needs_gloo
def test_collectives_over_two_processes():
    script = Path(__file__).parent / "collectives_script.py"
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script)],
                         env=environment(), capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("collectives ok") == 1  # printed by rank 0 alone


def test_a_command_not_yet_data_parallel_says_so_under_a_launcher(monkeypatch, tmp_path, capsys):
    from rlhf.cli import DATA_PARALLEL, main

    assert "generate" not in DATA_PARALLEL and "ppo" in DATA_PARALLEL
    monkeypatch.setenv("WORLD_SIZE", "2")  # refused before any process group is joined or file read
    code = main(["generate", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "p.jsonl"),
                 "--out", str(tmp_path / "out")])
    assert code == 1
    assert "rlhf generate runs in one process only" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
