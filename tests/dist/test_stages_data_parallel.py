"""`rlhf sft`, `rlhf rm` and `rlhf dpo` under two processes (gloo on the CPU) compute what one
process computes at the same global batch: the same losses step by step and the same weights.

Every rank takes its half of each global micro-batch, the token (or pair) count and the
gradients are summed over the ranks, and rank 0 alone writes; so the two runs differ only in the
order of floating-point sums.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from dist_launch import EQUALITY_STEPS, equality_args, metrics, needs_gloo, run

pytestmark = needs_gloo

STEPS = EQUALITY_STEPS


def assert_same_run(one, two, stray_share: float = 0.0):
    """Losses of the first steps to 1e-4, one metrics line per step (rank 0 alone logs), same weights
    to 1e-4, except at most `stray_share` of each tensor's elements, which must still lie within 1e-3.

    Why a stray share at all (the reward model only): AdamW divides each element's step by that
    element's own gradient scale, so an element whose gradient sits at the rounding floor (a unit
    whose SiLU gate is shut for every input) steps by up to the learning rate in a direction that
    the order of the floating-point sums decides. Measured on a 2-core EPYC: 2 of the 12,288
    elements of layer 0's gate_proj 3.2e-4 apart after 4 steps at lr 1e-3, every other element of
    the model within 6.5e-5. A rank whose gradients were not summed moves most elements apart."""
    first, second = metrics(one), metrics(two)
    assert [m["step"] for m in second] == list(range(1, STEPS + 1))
    for a, b in zip(first, second):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-4), (a, b)
        assert b["tokens"] == a["tokens"]  # tokens summed over the ranks
    wa, wb = load_file(str(one / "model" / "model.safetensors")), load_file(str(two / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        apart = (wb[name] - wa[name]).abs()
        assert (apart > 1e-4).float().mean() <= stray_share, (name, apart.max())
        assert apart.max() <= 1e-3, (name, apart.max())
    assert first[-1]["loss"] != first[0]["loss"]  # it trained


def test_sft_two_processes_match_one(tiny_model_dir, demonstrations_file, tmp_path):
    # grad accumulation 2 x global micro-batch 4: each rank sees 2 examples per micro-batch
    args = lambda out: ["sft", *equality_args(tiny_model_dir, demonstrations_file, out),  # noqa: E731
                        "--batch-size", "4",
                        "--grad-accum", "2"]
    run(args(tmp_path / "one"))
    run(args(tmp_path / "two"), nproc=2)
    assert_same_run(tmp_path / "one", tmp_path / "two")


def test_rm_two_processes_match_one_under_accelerate_launch(tiny_model_dir, pairs_file, tmp_path):
    args = lambda out: ["rm", *equality_args(tiny_model_dir, pairs_file, out), "--batch-size", "4"]  # noqa: E731
    run(args(tmp_path / "one"))
    run(args(tmp_path / "two"), nproc=2, launcher="accelerate")
    assert_same_run(tmp_path / "one", tmp_path / "two", stray_share=1e-3)


def test_dpo_two_processes_match_one(tiny_model_dir, pairs_file, tmp_path):
    args = lambda out: ["dpo", *equality_args(tiny_model_dir, pairs_file, out), "--batch-size", "4",  # noqa: E731
                        "--kl-prompts", "0"]
    run(args(tmp_path / "one"))
    run(args(tmp_path / "two"), nproc=2)
    assert_same_run(tmp_path / "one", tmp_path / "two")
    assert (tmp_path / "two" / "reference_logps.pt").exists()  # written once, by rank 0


def online_args(model, prompts, out, labeler="oracle") -> list[str]:
    return ["dpo", "--online", "--model", str(model), "--data", str(prompts), "--out", str(out), "--labeler", labeler,
            "--rounds", "2", "--prompts-per-round", "4", "--samples-per-prompt", "2", "--max-new-tokens", "8",
            "--max-length", "32", "--batch-size", "2", "--lr", "1e-3", "--warmup-steps", "0", "--log-every", "1",
            "--save-every", "0", "--kl-prompts", "2", "--precision", "fp32", "--seed", "5", "--no-progress"]


def assert_same_online_run(one, two) -> tuple[dict, dict]:
    """The same losses, pairs, weights and KL; returns both summaries."""
    first, second = metrics(one), metrics(two)
    assert len(first) == len(second) and [m["round"] for m in first] == [m["round"] for m in second]
    for a, b in zip(first, second):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-4), (a, b)
    for r in range(2):  # the same responses, labelled alike
        pairs = lambda out: (out / "rounds" / f"round-{r}" / "pairs.jsonl").read_text()  # noqa: E731
        assert pairs(one) == pairs(two)
    wa = load_file(str(one / "model" / "model.safetensors"))
    wb = load_file(str(two / "model" / "model.safetensors"))
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=1e-4)
    summaries = tuple(json.loads((out / "summary.json").read_text()) for out in (one, two))
    assert summaries[1]["kl"] == pytest.approx(summaries[0]["kl"], abs=1e-4)
    return summaries


def assert_halved(frozen: dict, name: str) -> None:
    """summary.json's `frozen_models[name]`: each of the 2 ranks holds about half of its parameters
    (FSDP2 splits each tensor by rows; a one-row head lies on rank 0)."""
    total, per_rank = frozen[name]["parameters"], frozen[name]["per_rank"]
    assert len(per_rank) == 2 and sum(per_rank) == total, (name, frozen)
    assert all(0.4 * total < held < 0.6 * total for held in per_rank), (name, frozen)


def prompts_file(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Story {i}: Once upon a time"}) + "\n" for i in range(8)))
    return prompts


@pytest.mark.parametrize("sharding", ["none", "fsdp2"])
def test_online_dpo_two_processes_match_one(sharding, tiny_model_dir, tmp_path):
    # each rank samples every other prompt of a round (row noise seeded by the row's index in the
    # round), rank 0 labels the gathered responses, and every rank trains on its half of the pairs;
    # fsdp2: round 1 samples from the policy sharded in round 0 (gathered once for the decode), its
    # fresh optimiser is built on the shards again, the reference (loaded for round 1: the starting
    # policy) is sharded for its forwards, and the KL samples at the end are a decode too
    prompts = prompts_file(tmp_path)
    run(online_args(tiny_model_dir, prompts, tmp_path / "one"))
    run([*online_args(tiny_model_dir, prompts, tmp_path / "two"), "--sharding", sharding], nproc=2)
    _, two = assert_same_online_run(tmp_path / "one", tmp_path / "two")
    assert (two["processes"], two["sharding"]) == (2, sharding)
    if sharding == "fsdp2":
        assert_halved(two["frozen_models"], "reference")
    else:  # data-parallel: a whole copy on each rank
        reference = two["frozen_models"]["reference"]
        assert reference["per_rank"] == [reference["parameters"]] * 2


def test_online_dpo_labels_with_a_sharded_reward_model(tiny_model_dir, reward_model_dir, tmp_path):
    # every rank runs the labelling reward model's forwards (each one a collective), rank 0's labels
    # are kept: the pairs, losses and weights are one process's
    prompts = prompts_file(tmp_path)
    run(online_args(tiny_model_dir, prompts, tmp_path / "one", str(reward_model_dir)))
    run([*online_args(tiny_model_dir, prompts, tmp_path / "two", str(reward_model_dir)), "--sharding", "fsdp2"],
        nproc=2)
    one, two = assert_same_online_run(tmp_path / "one", tmp_path / "two")
    for name in ("reward", "reference"):
        assert_halved(two["frozen_models"], name)
        assert one["frozen_models"][name]["per_rank"] == [one["frozen_models"][name]["parameters"]]
