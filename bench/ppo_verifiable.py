"""bench/ppo.py's verifiable-reward mode (`--task arithmetic`) and its `grpo-ds` algorithm.

`--task arithmetic`: prompts from the arithmetic task's training split with their answers
(`rlhf.demo.arithmetic.prompt_rows`: {"prompt": "7+12=", "answer": "19"}), and a reward that is
a program on both sides: ours the scorer `rlhf.rewards.verifiable:exact_match` (the row's
"answer" reaches it through `rlhf ppo`), TRL's a reward function calling the same `exact_match`
with the dataset's "answer" column (TRL passes extra dataset columns to reward functions).

`grpo-ds`: our `--algo grpo --dynamic-sampling` (DAPO's dynamic sampling: groups whose k rewards
are all equal carry no gradient under a group baseline, so they are dropped and more prompts are
sampled, up to `max_sampling_rounds` rounds, until the batch holds `groups` informative groups;
a batch still short is filled with dropped groups) against TRL's `GRPOTrainer` with the same
settings as the `grpo` row. TRL 1.16 has no dynamic sampling (nothing in `GRPOConfig` or
`GRPOTrainer`; it trains on every group and only logs `frac_reward_zero_std`), so the two sides
are compared on three rates, each over the timed steps:

- sampled/s: responses generated (ours: every sampling round; TRL: the batch);
- trained/s: responses in the update's batch (the same batch size on both sides);
- useful/s: trained responses in groups whose rewards are not all equal, the ones with a
  non-zero advantage (ours: (groups - filled_groups) * k per step; TRL: counted from the rewards
  of each batch, k consecutive completions per prompt as TRL groups them).

The all-equal share is of every group sampled (ours: the stage's `dropped_group_share`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

TASKS = ("stories", "arithmetic")
OUR_REWARD = "rlhf.rewards.verifiable:exact_match"
DEFAULT_MAX_NEW_TOKENS = {"stories": 48, "arithmetic": 6}
ARITHMETIC_ALGOS = ("rloo", "grpo", "grpo-ds")  # TRL's PPO needs a reward model, not a function
COUNTERS = ("sampled", "useful", "equal_groups")  # cumulative per-step counters of the records


def arithmetic_prompts(out: Path, n: int, seed: int, max_operand: int) -> Path:
    """`n` training problems of the arithmetic task with their answers, written to OUT/prompts.jsonl."""
    from rlhf.demo.arithmetic import problems, prompt_rows

    path = out / "prompts.jsonl"
    rows = prompt_rows(problems("train", n, seed, max_operand))
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def base_model_note() -> str:
    return ("no --model: the shipped base model (rlhf.resources.BASE_MODEL), which has not learned "
            "arithmetic, so almost every group is all-zero: useful samples/s is near 0 on both sides and "
            "ours spends every sampling round of each step looking for informative groups")


def informative_count(rewards: Sequence[float], k: int) -> int:
    """Groups of k consecutive rewards (one prompt's samples) that are not all equal, by the
    stage's own filter (`rlhf.algos.informative_groups`). len(rewards) must be a multiple of k."""
    import torch

    from rlhf.algos import informative_groups

    return int(informative_groups(torch.as_tensor([float(r) for r in rewards]), k).sum())


def count_batch(counters: dict, rewards: Sequence[float], k: int) -> None:
    """Add one trained batch of TRL's (every sampled response is trained) to `counters`."""
    informative = informative_count(rewards, k)
    counters["sampled"] += len(rewards)
    counters["useful"] += informative * k
    counters["equal_groups"] += len(rewards) // k - informative


def ours_step_counts(line: dict, groups: int, k: int) -> dict:
    """One step of `rlhf ppo --dynamic-sampling` from its metrics.jsonl line: every sampling round
    samples `groups` prompts k times; the batch trains `groups` groups, `filled_groups` of them
    all-equal fillers; `dropped_group_share` is of every group sampled."""
    rounds, filled = line["sampling_rounds"], line["filled_groups"]
    return {"sampled": rounds * groups * k, "useful": (groups - filled) * k,
            "equal_groups": round(line["dropped_group_share"] * rounds * groups)}


def cumulative(steps: list[dict]) -> list[dict]:
    """Per-step counters -> running totals, step 0 (all zero) first."""
    totals, out = dict.fromkeys(COUNTERS, 0), [dict.fromkeys(COUNTERS, 0)]
    for counts in steps:
        totals = {key: totals[key] + counts[key] for key in COUNTERS}
        out.append(dict(totals))
    return out


def useful_throughput(records: list[dict], warmup: int, k: int) -> dict:
    """sampled/s, trained/s and useful/s over steps warmup+1..N (records: step, t, samples = trained,
    and the cumulative COUNTERS), the useful share of the trained samples and the all-equal share
    of the groups sampled."""
    by_step = {r["step"]: r for r in records}
    first, last = by_step[warmup], by_step[max(by_step)]
    seconds = last["t"] - first["t"]
    delta = {key: last[key] - first[key] for key in ("samples", *COUNTERS)}
    groups_sampled = delta["sampled"] / k
    return {"sampled_per_s": delta["sampled"] / seconds, "trained_per_s": delta["samples"] / seconds,
            "useful_per_s": delta["useful"] / seconds, "useful_share": delta["useful"] / max(delta["samples"], 1),
            "equal_group_share": delta["equal_groups"] / max(groups_sampled, 1),
            "rounds_per_step": delta["sampled"] / max(delta["samples"], 1)}


def trl_reward_function():
    """TRL's side of the reward: rlhf's `exact_match` on the dataset's "answer" column."""
    from rlhf.rewards.verifiable import exact_match

    def exact_match_reward(prompts, completions, answer, **kwargs) -> list[float]:
        return list(exact_match(prompts, completions, answers=answer))

    return exact_match_reward


USEFUL_HEADERS = ["algo", "TRL", "ours sampled/s", "TRL sampled/s", "ours trained/s", "TRL trained/s",
                  "ours useful/s", "TRL useful/s", "useful x", "ours all-equal %", "TRL all-equal %",
                  "ours rounds/step"]


def useful_row(algo: str, trl_version: str, ours: dict, trl: dict) -> list:
    """One row of the printed dynamic-sampling table from the two sides' `useful_throughput`."""
    ratio = ours["useful_per_s"] / trl["useful_per_s"] if trl["useful_per_s"] else float("inf")
    return [algo, trl_version, ours["sampled_per_s"], trl["sampled_per_s"], ours["trained_per_s"],
            trl["trained_per_s"], ours["useful_per_s"], trl["useful_per_s"], ratio,
            100 * ours["equal_group_share"], 100 * trl["equal_group_share"], ours["rounds_per_step"]]


def useful_note(trl_version: str) -> str:
    from rlhf.config import PPOConfig

    max_rounds = PPOConfig.max_sampling_rounds  # the stage's default, which the bench leaves as it is
    return (f"grpo-ds: ours is `rlhf ppo --algo grpo --dynamic-sampling` (up to {max_rounds} sampling rounds per step); "
            f"TRL {trl_version} has no dynamic sampling (no option in GRPOConfig/GRPOTrainer), so its side is "
            "GRPOTrainer with the grpo row's settings, training on every group. sampled = responses generated, "
            "trained = responses in the update, useful = trained responses in groups whose rewards are not all "
            "equal (non-zero advantage); all-equal % = share of the groups sampled whose k rewards were equal "
            "(ours: dropped); rounds/step = sampled / trained. The main table's samples/s is trained/s, its "
            "tokens/s the trained responses' tokens.")
