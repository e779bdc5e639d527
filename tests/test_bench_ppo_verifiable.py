"""bench/ppo.py's verifiable-reward mode (--task arithmetic) and grpo-ds: argument parsing, the
useful-samples arithmetic of both sides, and our worker's config (no TRL run here)."""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import ppo  # noqa: E402
import ppo_verifiable as verifiable  # noqa: E402


def test_arithmetic_task_defaults_to_grpo_ds_short_responses_and_the_exact_match_program():
    from rlhf.resources import BASE_MODEL

    args = ppo.parse_args(["--task", "arithmetic"])
    assert args.algos == ["grpo-ds"] and args.max_new_tokens == 6
    assert args.reward == "rlhf.rewards.verifiable:exact_match"
    assert args.model == str(BASE_MODEL) and args.base_model  # no --model: the shipped base, and a note says so
    args = ppo.parse_args(["--task", "arithmetic", "--model", "m", "--algos", "grpo,grpo-ds", "--max-new-tokens", "8"])
    assert (args.model, args.base_model, args.algos, args.max_new_tokens) == ("m", False, ["grpo", "grpo-ds"], 8)
    # the story task is what it was: three algorithms, 48 tokens, the reward model
    args = ppo.parse_args([])
    assert args.algos == ["ppo", "rloo", "grpo"] and args.max_new_tokens == 48
    assert args.model == "runs/sft/model" and args.reward == args.reward_model == "runs/rm/model"


@pytest.mark.parametrize("argv, message", [
    (["--task", "arithmetic", "--algos", "ppo"], "reward model"),
    (["--algos", "grpo-ds", "--k", "1"], "--k"),
    (["--algos", "dapo"], "grpo-ds"),
])
def test_bench_refuses_what_it_cannot_compare(argv, message, capsys):
    with pytest.raises(SystemExit):
        ppo.parse_args(argv)
    assert message in capsys.readouterr().err


def test_a_trl_batch_counts_only_groups_whose_rewards_differ_as_useful():
    counters = dict.fromkeys(verifiable.COUNTERS, 0)
    # k = 4: one mixed group, one all wrong, one all right -> 4 useful samples of 12, 2 equal groups
    verifiable.count_batch(counters, [1, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1], 4)
    assert counters == {"sampled": 12, "useful": 4, "equal_groups": 2}
    verifiable.count_batch(counters, [0.5, 0.25], 2)
    assert counters == {"sampled": 14, "useful": 6, "equal_groups": 2}
    with pytest.raises(ValueError, match="divisible"):
        verifiable.count_batch(counters, [1, 0, 1], 2)


def test_our_step_counts_come_from_the_stages_sampling_stats():
    # 8 groups of 4 per batch; 3 rounds sampled 24 groups, half of them all-equal (12 dropped);
    # the batch still lacked one informative group, so 1 dropped group filled it: 7 * 4 useful rows
    line = {"sampling_rounds": 3, "filled_groups": 1, "dropped_group_share": 0.5}
    assert verifiable.ours_step_counts(line, groups=8, k=4) == {"sampled": 96, "useful": 28, "equal_groups": 12}
    one_round = {"sampling_rounds": 1, "filled_groups": 0, "dropped_group_share": 0.25}
    assert verifiable.ours_step_counts(one_round, 8, 4) == {"sampled": 32, "useful": 32, "equal_groups": 2}


def test_useful_throughput_over_the_timed_steps():
    steps = [{"sampled": 32, "useful": 8, "equal_groups": 6}, {"sampled": 64, "useful": 32, "equal_groups": 8},
             {"sampled": 96, "useful": 24, "equal_groups": 12}]
    counts = verifiable.cumulative(steps)
    assert counts[0] == {"sampled": 0, "useful": 0, "equal_groups": 0}
    assert counts[3] == {"sampled": 192, "useful": 64, "equal_groups": 26}
    records = [{"step": s, "t": t, "samples": 32 * s, **c} for s, t, c in zip(range(4), (0.0, 1.0, 3.0, 5.0), counts)]
    # warm-up 1: steps 2-3 in 4 s: 160 sampled, 64 trained, 56 useful; 20 equal of 40 groups sampled
    rates = verifiable.useful_throughput(records, warmup=1, k=4)
    assert rates == {"sampled_per_s": 40.0, "trained_per_s": 16.0, "useful_per_s": 14.0, "useful_share": 56 / 64,
                     "equal_group_share": 0.5, "rounds_per_step": 2.5}
    row = verifiable.useful_row("grpo-ds", "1.16.0", rates, {**rates, "useful_per_s": 7.0})
    assert row[:2] == ["grpo-ds", "1.16.0"] and row[8] == 2.0 and row[9] == row[10] == 50.0


def test_trl_reward_is_our_exact_match_on_the_answer_column(tmp_path):
    reward = verifiable.trl_reward_function()
    assert reward(["2+3=", "7-4=", "9+9="], ["5", "2", " 18"], answer=["5", "3", "18"], trainer_state=None) == \
        [1.0, 0.0, 1.0]
    path = verifiable.arithmetic_prompts(tmp_path, 6, seed=0, max_operand=9)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 6 and all(r["prompt"].endswith("=") for r in rows)
    # each row's answer is the problem's: the reward gives 1 to the right answer on both sides
    assert reward([r["prompt"] for r in rows], [r["answer"] for r in rows], answer=[r["answer"] for r in rows]) == \
        [1.0] * 6


def test_our_grpo_ds_worker_runs_grpo_with_dynamic_sampling_and_counts_its_rounds(tmp_path, monkeypatch):
    import rlhf.train.ppo as stage

    seen = {}

    def fake_run(cfg):  # what rlhf ppo would log for 2 steps of 2 groups of 2
        seen["cfg"] = cfg
        lines = [{"step": 1, "elapsed_s": 1.0, "tokens": 10, "reward": 0.5, "sampling_rounds": 2, "filled_groups": 0,
                  "dropped_group_share": 0.5},
                 {"step": 2, "elapsed_s": 3.0, "tokens": 20, "reward": 0.5, "sampling_rounds": 1, "filled_groups": 1,
                  "dropped_group_share": 0.5}]
        (Path(cfg.out) / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))

    monkeypatch.setattr(stage, "run", fake_run)
    (tmp_path / "run").mkdir()
    spec = {"algo": "grpo-ds", "model": "m", "prompts": "p.jsonl", "out": str(tmp_path / "run"),
            "reward": verifiable.OUR_REWARD, "kl": 0.04, "steps": 2, "samples": 4, "k": 2, "max_new_tokens": 6,
            "lr": 1e-5, "precision": "fp32", "seed": 0}
    result = ppo.worker_ours(spec)
    cfg = seen["cfg"]
    assert (cfg.algo, cfg.dynamic_sampling, cfg.num_samples, cfg.batch_size) == ("grpo", True, 2, 2)
    assert cfg.reward == verifiable.OUR_REWARD and cfg.kl_coef == 0.04 and not cfg.normalize_reward
    assert [r["sampled"] for r in result["records"]] == [0, 8, 12]
    assert [r["useful"] for r in result["records"]] == [0, 4, 6]
    assert [r["equal_groups"] for r in result["records"]] == [0, 2, 3]
    assert result["dropped_group_share"] == [0.5, 0.5]
