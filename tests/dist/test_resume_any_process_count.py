"""A two-process run killed with SIGKILL after its first checkpoint resumes with one process and
with two, and both end at the weights of an uninterrupted run: a checkpoint holds replicated
state (weights, optimiser, schedule, rank 0's random state: enough for these dropout-free
models) and the data position is the step counter, so any process count can continue it."""

from __future__ import annotations

import shutil

import torch
from safetensors.torch import load_file

from dist_launch import kill_two_process_run, metrics, needs_gloo, resumable_sft_args, run

pytestmark = needs_gloo



def test_two_process_run_killed_resumes_with_one_and_with_two(tiny_model_dir, demonstrations_file, tmp_path):
    straight = tmp_path / "straight"
    run(resumable_sft_args(tiny_model_dir, demonstrations_file, straight))

    killed = tmp_path / "killed"
    kill_two_process_run(resumable_sft_args(tiny_model_dir, demonstrations_file, killed), killed, at_step=5)
    copy = tmp_path / "killed-copy"
    shutil.copytree(killed, copy)

    run(resumable_sft_args(tiny_model_dir, demonstrations_file, killed, "--resume"), nproc=1)
    run(resumable_sft_args(tiny_model_dir, demonstrations_file, copy, "--resume"), nproc=2)

    expected = load_file(str(straight / "model" / "model.safetensors"))
    for resumed in (killed, copy):
        got = load_file(str(resumed / "model" / "model.safetensors"))
        assert got.keys() == expected.keys()
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-5)
        assert [m["step"] for m in metrics(resumed)] == [5, 10, 15, 20, 25, 30]  # no line lost or written twice
