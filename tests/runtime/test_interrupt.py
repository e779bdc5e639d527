"""Ctrl-C says where the run stopped and how to continue, without a traceback (issue 11, item 7)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def test_interrupted_message_names_the_step_and_the_checkpoint():
    from rlhf.runtime import progress

    progress.start_run()
    assert progress.interrupted_message() == "interrupted before the first step; continue with --resume"
    progress.record_step(7)
    assert progress.interrupted_message().startswith("interrupted at step 7; continue with --resume (no checkpoint")
    progress.record_checkpoint(5)
    progress.record_context("round 2/3")
    assert progress.interrupted_message() == ("interrupted at step 7 (round 2/3); continue with --resume "
                                              "(it restarts from the newest checkpoint, step 5)")
    progress.start_run()


def test_ctrl_c_during_training_prints_the_step_and_no_traceback(tiny_model_dir, demonstrations_file, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "rlhf.cli", "sft", "--model", str(tiny_model_dir), "--data",
               str(demonstrations_file), "--out", str(out), "--precision", "fp32", "--max-steps", "100000",
               "--batch-size", "4", "--max-length", "32", "--save-every", "2", "--no-progress"]
    # SIGINT as in a terminal: a test run started in the background (`cmd &` in a script) ignores
    # SIGINT, the child would inherit that, and Python then installs no KeyboardInterrupt handler
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=default_sigint)
    deadline = time.time() + 600  # a loaded CI machine can take minutes to import and load the model
    while not (out / "checkpoints" / "step-2").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None and (out / "checkpoints" / "step-2").exists(), "the run never reached its step-2 checkpoint"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("rlhf sft: interrupted at step ") and "; continue with --resume" in last
    assert int(last.split("at step ")[1].split(";")[0]) >= 2
