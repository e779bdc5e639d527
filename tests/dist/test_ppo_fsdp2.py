"""`rlhf ppo --sharding fsdp2` on two CPU processes (gloo) computes what one unsharded process
computes at the same global batch, for PPO (policy and critic sharded, the reference sharded for
its forwards) and GRPO (no critic): the same samples, the same first 4 losses and the same final
weights (1e-4). The policy is gathered once per rollout for the decode (rlhf.runtime.sharding.gathered),
and a rank whose share of a minibatch is empty runs an idle micro-batch so that its collectives
meet the other rank's (PPO's minibatches of 2 of 4 rows: 8 of the 32 here lie on one rank only).

With a reward model for --reward, it is sharded for its forwards as the reference is (each rank
holds about half of its parameters, as summary.json's `frozen_models` records), every rank scoring
as many batches; --no-shard-frozen keeps it whole on each rank. Either way the run is the one
process's.

A sharded PPO run's checkpoint (every rank its shard, torch.distributed.checkpoint) resumes to the
weights of an uninterrupted run, sharded on two processes or whole on one.
"""

from __future__ import annotations

import json
import shutil

import pytest

from dist_launch import kill_two_process_run, metrics, needs_gloo, run
from test_ppo_data_parallel import assert_same_weights, ppo_args, ppo_inputs  # noqa: F401  (a fixture)
from test_stages_data_parallel import assert_halved

pytestmark = needs_gloo

STEPS = 4
ALGOS = {
    "ppo": ["--minibatch-size", "2", "--kl-target", "0.05", "--kl-horizon", "20"],  # 4 epochs of 2 minibatches
    "grpo": [],  # one optimiser step, log pi_old from the update's own forward
}


def args_of(model, prompts, out, algo, *extra):
    return ppo_args(model, prompts, out, "--algo", algo, "--max-steps", str(STEPS), "--log-every", "1",
                    "--save-every", "0", "--samples-every", "2", *ALGOS[algo], *extra)


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_fsdp2_two_processes_match_one_unsharded(algo, tiny_model_dir, ppo_inputs, tmp_path):  # noqa: F811
    one, two = tmp_path / "one", tmp_path / "two"
    run(args_of(tiny_model_dir, ppo_inputs, one, algo))
    run(args_of(tiny_model_dir, ppo_inputs, two, algo, "--sharding", "fsdp2"), nproc=2)
    first, second = metrics(one), metrics(two)
    assert [m["step"] for m in second] == list(range(1, STEPS + 1))
    for a, b in zip(first, second):
        assert b["tokens"] == a["tokens"] and b["response_length"] == a["response_length"]  # the same samples
        for key in ("loss", "policy_loss", "reward", "kl", "entropy", "grad_norm", *(("value_loss",) * (algo == "ppo"))):
            assert b[key] == pytest.approx(a[key], abs=1e-4), (key, a, b)
    assert first[-1]["loss"] != first[0]["loss"]  # it trained
    assert_same_weights(one, two)
    summary = json.loads((two / "summary.json").read_text())
    assert (summary["processes"], summary["sharding"]) == (2, "fsdp2")


def test_fsdp2_ppo_run_killed_resumes_to_the_uninterrupted_weights(tiny_model_dir, ppo_inputs, tmp_path):  # noqa: F811
    def args(out, *more):
        return ppo_args(tiny_model_dir, ppo_inputs, out, "--algo", "ppo", "--max-steps", "6", *ALGOS["ppo"],
                        "--save-every", "3", "--log-every", "1", "--samples-every", "0", *more)

    straight = tmp_path / "straight"
    run(args(straight))

    killed = tmp_path / "killed"
    kill_two_process_run(args(killed, "--sharding", "fsdp2"), killed, at_step=3)
    shards = killed / "checkpoints" / "step-3" / "sharded"
    assert {"__0_0.distcp", "__1_0.distcp"} <= {p.name for p in shards.iterdir()}  # each rank wrote its shard
    copy, alone = tmp_path / "killed-copy", tmp_path / "killed-alone"
    shutil.copytree(killed, copy)
    shutil.copytree(killed, alone)

    run(args(killed, "--resume", "--sharding", "fsdp2"), nproc=2)
    run(args(copy, "--resume", "--sharding", "fsdp2", "--no-shard-frozen"), nproc=2)  # the reference whole on each rank
    run(args(alone, "--resume"), nproc=1)  # the shards read whole by one unsharded process
    for resumed in (killed, copy, alone):
        assert_same_weights(straight, resumed)
        assert [m["step"] for m in metrics(resumed)] == list(range(1, 7))  # no line lost or written twice


def test_fsdp2_shards_the_reward_model_unless_told_not_to(tiny_model_dir, reward_model_dir, ppo_inputs,  # noqa: F811
                                                          tmp_path):
    def args(out, *more):  # PPO: the critic starts from the reward model (it reads the policy's tokens)
        return args_of(tiny_model_dir, ppo_inputs, out, "ppo", "--reward", str(reward_model_dir), *more)

    one, sharded, whole = tmp_path / "one", tmp_path / "sharded", tmp_path / "whole"
    run(args(one))
    run(args(sharded, "--sharding", "fsdp2"), nproc=2)
    run(args(whole, "--sharding", "fsdp2", "--no-shard-frozen"), nproc=2)
    first = metrics(one)
    for two in (sharded, whole):
        for a, b in zip(first, metrics(two), strict=True):
            assert b["tokens"] == a["tokens"]  # the same samples
            for key in ("loss", "policy_loss", "value_loss", "reward", "reward_normalized", "kl", "grad_norm"):
                assert b[key] == pytest.approx(a[key], abs=1e-4), (two.name, key, a, b)
        assert_same_weights(one, two)
    assert len({m["reward"] for m in first}) > 1  # the reward model scores responses apart

    held = lambda out: json.loads((out / "summary.json").read_text())["frozen_models"]  # noqa: E731
    n = held(one)["reward"]["parameters"]
    assert held(one)["reward"]["per_rank"] == [n]
    for name in ("reward", "reference"):
        assert_halved(held(sharded), name)
        assert held(whole)[name]["per_rank"] == [held(whole)[name]["parameters"]] * 2
