"""`--sharding fsdp2` on two CPU processes (gloo): each rank holds half of every parameter,
gradient and optimiser state (torch's `fully_shard`, per decoder layer and on the root), and the
run computes what one unsharded process computes at the same global batch: the same losses step
by step and the same weights. Gradients are summed over the ranks (the loss is already divided
by the global token count), not averaged as FSDP2 does by default.

A sharded run's checkpoint is written by every rank, its own shard (torch.distributed.checkpoint),
and resharded on load, so a two-process FSDP2 run killed with SIGKILL resumes with one process
(unsharded), with two and with four (sharded) to the weights of an uninterrupted run. The tiny Llama has no dropout, so runs are deterministic.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from dist_launch import (EQUALITY_STEPS, equality_args, kill_two_process_run, metrics, needs_gloo,
                         resumable_sft_args, run)

pytestmark = needs_gloo

STEPS = EQUALITY_STEPS


def weights(out):
    return load_file(str(out / "model" / "model.safetensors"))


def max_weight_difference(one, two) -> float:
    wa, wb = weights(one), weights(two)
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def assert_same_run(one, two):
    first, second = metrics(one), metrics(two)
    assert [m["step"] for m in second] == list(range(1, STEPS + 1))
    for a, b in zip(first, second):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-4), (a, b)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4), (a, b)  # the norm over both shards
        assert b["tokens"] == a["tokens"]
    assert max_weight_difference(one, two) <= 1e-4
    assert first[-1]["loss"] != first[0]["loss"]  # it trained
    summary = json.loads((two / "summary.json").read_text())
    assert (summary["processes"], summary["sharding"]) == (2, "fsdp2")
    config = json.loads((two / "model" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]  # not fully_shard's FSDPLlamaForCausalLM


def test_sft_fsdp2_two_processes_match_one(tiny_model_dir, demonstrations_file, tmp_path):
    args = lambda out: ["sft", *equality_args(tiny_model_dir, demonstrations_file, out),  # noqa: E731
                        "--batch-size", "4",
                        "--grad-accum", "2"]
    run(args(tmp_path / "one"))
    run([*args(tmp_path / "two"), "--sharding", "fsdp2"], nproc=2)
    assert_same_run(tmp_path / "one", tmp_path / "two")
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["sharding"] == "none"


def test_sft_under_accelerate_fsdp2_cpu_config_matches_one(tiny_model_dir, demonstrations_file, tmp_path):
    # configs/accelerate/fsdp2-cpu.yaml (FSDP, fsdp_version 2) means --sharding fsdp2
    args = lambda out: ["sft", *equality_args(tiny_model_dir, demonstrations_file, out),  # noqa: E731
                        "--batch-size", "4"]
    run(args(tmp_path / "one"))
    run(args(tmp_path / "two"), nproc=2, launcher="accelerate", config="fsdp2-cpu.yaml")
    assert_same_run(tmp_path / "one", tmp_path / "two")


def test_dpo_fsdp2_two_processes_match_one(tiny_model_dir, pairs_file, tmp_path):
    # a separate --reference (a copy of the model): frozen, sharded for its forwards (the pairs'
    # log-probs before training, the KL samples after it), every rank scoring the same rows
    reference = tmp_path / "reference"
    shutil.copytree(tiny_model_dir, reference)
    args = lambda out: ["dpo", *equality_args(tiny_model_dir, pairs_file, out), "--batch-size", "4",  # noqa: E731
                        "--reference", str(reference), "--kl-prompts", "2", "--max-new-tokens", "8"]
    run(args(tmp_path / "one"))
    run([*args(tmp_path / "two"), "--sharding", "fsdp2"], nproc=2)
    assert_same_run(tmp_path / "one", tmp_path / "two")
    one, two = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("one", "two"))
    assert two["kl"] == pytest.approx(one["kl"], abs=1e-4) and one["kl"] > 0
    held = two["frozen_models"]["reference"]
    assert sum(held["per_rank"]) == held["parameters"] and max(held["per_rank"]) < 0.6 * held["parameters"]


def test_fsdp2_run_killed_resumes_with_one_two_and_four_processes(tiny_model_dir, demonstrations_file, tmp_path):
    def args(out, *extra):
        return resumable_sft_args(tiny_model_dir, demonstrations_file, out, *extra, steps=20)

    straight = tmp_path / "straight"
    run(args(straight))

    killed = tmp_path / "killed"
    kill_two_process_run(args(killed, "--sharding", "fsdp2"), killed, at_step=5)
    copy, four = tmp_path / "killed-copy", tmp_path / "killed-four"
    shutil.copytree(killed, copy)
    shutil.copytree(killed, four)

    run(args(killed, "--resume"), nproc=1)  # unsharded
    run(args(copy, "--resume", "--sharding", "fsdp2"), nproc=2)
    run(args(four, "--resume", "--sharding", "fsdp2"), nproc=4)

    for resumed in (killed, copy, four):
        assert max_weight_difference(straight, resumed) <= 1e-5
        assert [m["step"] for m in metrics(resumed)] == [5, 10, 15, 20]  # no line lost or written twice


def test_fsdp2_checkpoint_is_a_shard_per_rank_and_a_half_written_one_is_ignored(tiny_model_dir, demonstrations_file,
                                                                                  tmp_path):
    out = tmp_path / "run"
    run(resumable_sft_args(tiny_model_dir, demonstrations_file, out, "--sharding", "fsdp2", steps=10), nproc=2)
    uninterrupted = weights(out)

    first = out / "checkpoints" / "step-5"
    shards = first / "sharded"
    assert sorted(p.name for p in shards.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    sizes = [(shards / f"__{rank}_0.distcp").stat().st_size for rank in (0, 1)]
    assert min(sizes) / sum(sizes) > 0.4  # each rank wrote about half of the state, not rank 0 all of it
    state = torch.load(first / "state.pt", weights_only=True)  # rank 0's file: schedule, step, rng, config
    assert state["sharded"] == ["model", "optimizer"] and "model" not in state and "optimizer" not in state
    assert sum(sizes) > 10 * (first / "state.pt").stat().st_size

    # (the last step writes model/, no checkpoint) a step-8 cut before its marker (state.pt, written
    # last), and a step-9 whose shards lack DCP's index: both ignored
    for step, part in ((8, "state.pt"), (9, "sharded/.metadata")):
        cut = out / "checkpoints" / f"step-{step}"
        shutil.copytree(first, cut)
        (cut / part).unlink()
    resumed = run(resumable_sft_args(tiny_model_dir, demonstrations_file, out, "--resume", steps=10), nproc=1)
    assert "from step 5" in resumed.stderr
    assert [m["step"] for m in metrics(out)] == [5, 10]
    assert max(float((uninterrupted[k] - v).abs().max()) for k, v in weights(out).items()) <= 1e-5
