"""A run never destroys earlier work, never shares its directory, and writes strict JSON (issue 11, item 4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch


def cfg(out, **fields):
    from rlhf.config import TrainConfig

    return TrainConfig(out=str(out), **fields)


def snapshot(path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def strict_json(text: str):
    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_non_empty_out_is_refused_before_anything_is_written(tmp_path):
    from rlhf.runtime import RunDir

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("lr: 0.5\n")
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    (out / "model").mkdir()
    (out / "model" / "model.safetensors").write_bytes(b"weights")
    before = snapshot(out)
    with pytest.raises(FileExistsError, match="--resume.*--overwrite"):
        RunDir(cfg(out))
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.jsonl", "model"]  # no .lock either


def test_overwrite_clears_the_earlier_run(tmp_path):
    from rlhf.runtime import RunDir

    out = tmp_path / "run"
    (out / "checkpoints" / "step-2").mkdir(parents=True)
    (out / "config.yaml").write_text("lr: 0.5\n")
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    RunDir(cfg(out, overwrite=True, lr=0.25))
    assert sorted(p.name for p in out.iterdir()) == [".lock", "config.yaml"]
    assert "lr: 0.25" in (out / "config.yaml").read_text()


def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path):
    from rlhf.runtime import RunDir

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an rlhf run directory"):
        RunDir(cfg(tmp_path, overwrite=True))
    assert (tmp_path / "notes.txt").read_text() == "mine"


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_run_in_the_same_out_is_refused_while_the_first_holds_the_lock(tmp_path):
    from rlhf.runtime import RunDir

    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FileExistsError, match=f"in use by another run \\(pid {holder.pid}\\)"):
            RunDir(cfg(out, resume=True))
    finally:
        holder.kill()
        holder.wait()


def test_the_stale_lock_of_a_dead_run_is_taken_over(tmp_path):
    from rlhf.runtime import RunDir

    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / ".lock").write_text(dead.stdout)  # its flock died with it
    RunDir(cfg(out))  # only a stale .lock: the directory counts as empty
    assert (out / ".lock").read_text().strip() == str(os.getpid())


def test_nan_and_inf_are_written_as_null(tmp_path):
    from rlhf.runtime import RunDir

    run = RunDir(cfg(tmp_path / "run"))
    run.log({"step": 1, "loss": float("nan"), "grad_norm": torch.tensor(float("inf")), "reward": 0.5})
    run.write_summary({"loss": float("-inf"), "per_round": [{"kl": float("nan")}], "steps": 1})
    line = strict_json((tmp_path / "run" / "metrics.jsonl").read_text())
    assert line == {"step": 1, "loss": None, "grad_norm": None, "reward": 0.5}
    summary = strict_json((tmp_path / "run" / "summary.json").read_text())
    assert summary.pop("machine")["cpu"]  # every summary names the machine it ran on
    assert summary == {"loss": None, "per_round": [{"kl": None}], "steps": 1}


def test_a_torn_last_log_line_is_dropped_on_resume_with_a_warning(tmp_path, capsys):
    from rlhf.runtime import resume_state
    from rlhf.runtime.rundir import RunDir

    out = tmp_path / "run"
    RunDir(cfg(out))
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    (out / "samples.jsonl").write_text('{"step": 1, "response": "a"}\n{"step": 2, "resp')
    resume_state(RunDir(cfg(out, resume=True)))  # no checkpoint: starts from step 0, logs emptied
    err = capsys.readouterr().err
    assert "metrics.jsonl: dropped a torn last line" in err and "samples.jsonl: dropped a torn last line" in err

    from rlhf.runtime.files import truncate_jsonl

    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    truncate_jsonl(out / "metrics.jsonl", after_step=2)
    assert (out / "metrics.jsonl").read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'


def test_a_damaged_line_inside_a_log_is_an_error_naming_it(tmp_path):
    from rlhf.runtime.files import truncate_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        truncate_jsonl(path, after_step=3)


def test_demo_style_stage_runs_resume_into_missing_directories(tmp_path, capsys):
    """`rlhf demo --resume` passes --resume to stages that never started: they start from step 0."""
    from rlhf.runtime import RunDir, resume_state

    assert resume_state(RunDir(cfg(tmp_path / "never-started", resume=True))) is None
    assert "holds no checkpoint yet; starting from step 0" in capsys.readouterr().err


def test_the_lock_is_released_when_the_run_ends(tmp_path):
    from rlhf.runtime import RunDir

    out = tmp_path / "run"
    RunDir(cfg(out)).write_summary({"steps": 0})
    probe = subprocess.run(
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
                               "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", str(out / ".lock")],
        capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr


def test_files_and_their_directories_are_fsynced_after_a_rename(tmp_path, monkeypatch, linear_fit):
    synced: list[str] = []
    real_fsync = os.fsync

    def record(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    _, run = linear_fit(tmp_path / "run")  # a checkpoint at step 2
    run.write_summary({"steps": 4})
    out = (tmp_path / "run").resolve()
    assert str(out / "checkpoints" / ".tmp-step-2" / "state.pt") in synced  # the file before its rename
    assert str(out / "checkpoints") in synced  # the directory after it
    assert str(out / "metrics.jsonl") in synced
    assert "summary.json" in synced[-2] and synced[-1] == str(out)  # summary.json, then its directory


def test_overwrite_and_resume_force_are_flags_of_every_training_command(tmp_path):
    from rlhf.cli import parse

    for command in ("pretrain", "sft", "rm", "dpo", "ppo"):
        cfg = parse(command, ["--overwrite", "--resume-force"])
        assert cfg.overwrite and cfg.resume_force and not cfg.resume
    with pytest.raises(ValueError, match="pass one of them"):
        from rlhf.runtime import RunDir

        RunDir(parse("sft", ["--resume", "--overwrite", "--out", str(tmp_path / "run")]))
    assert not (tmp_path / "run").exists()
