"""Benchmark: SFT, then GRPO and its variants on the arithmetic task, over several seeds.

    python bench/arithmetic.py [--seeds 0,1,2] [--algos grpo,dapo,dr-grpo,gspo,rloo,reinforce++]
                               [--steps 60] [--lr 5e-5] [--samples 8] [--batch 16] [--max-operand 19]
                               [--sft-epochs 8]
                               [--quick] [--threads N] [--out runs/bench-arithmetic]

Each seed is one `rlhf demo --task arithmetic` (rlhf.demo.arithmetic_pipeline) in OUT/seed-S
with the plan's sizes changed by the flags: its own SFT data and SFT run, every RL run from that
SFT policy, every policy evaluated on the same held-out problems (the test split does not depend
on the seed). A seed directory that already holds finished steps is continued, not redone.

Printed (and written to OUT/results.md and OUT/results.json): for SFT and each algorithm, the
mean over seeds of greedy pass@1, sampled pass@1, pass@k, KL to SFT (nats) and RL wall time,
with a 95% interval over seeds (mean +- t(0.975, n-1) * sd / sqrt(n)), the per-seed values, the
gain over the same seed's SFT policy in sampled pass@1 (paired: the seeds' SFT policies differ far
more than an RL run changes one), and the gain of the best algorithm over SFT.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

# Student t quantiles t(0.975, df) for the 95% interval over a few seeds; a normal 1.96 beyond.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
METRICS = ("greedy_accuracy", "sampled_accuracy", "pass_at_k", "kl_to_ref", "wall_s")


def interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t-interval of the mean over seeds (a point when n = 1)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = T975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def run_seed(out: Path, seed: int, plan, quick: bool) -> dict:
    from rlhf.config import DemoConfig
    from rlhf.demo import arithmetic_pipeline

    directory = out / f"seed-{seed}"
    # workers=1: one step at a time with every core, as the recorded results ran (each policy's wall_s alone)
    cfg = DemoConfig(out=str(directory), task="arithmetic", quick=quick, seed=seed, progress=False,
                     resume=directory.exists(), workers=1)
    arithmetic_pipeline.run(cfg, plan)
    return json.loads((directory / "summary.json").read_text(encoding="utf-8"))


def aggregate(summaries: list[dict]) -> dict:
    """{policy name: {metric: {"mean", "low", "high", "values"}}} over the seeds' summaries."""
    table: dict[str, dict] = {}
    for summary in summaries:
        for policy in summary["policies"]:
            row = table.setdefault(policy["name"], {m: [] for m in METRICS})
            for metric in METRICS:
                row[metric].append(policy[metric])
    return {name: {m: dict(zip(("mean", "low", "high"), interval(v)), values=v) for m, v in row.items()}
            for name, row in table.items()}


def format_markdown(results: dict, k: int, seeds: list[int]) -> str:
    def cell(stat: dict, digits: int = 3) -> str:
        if stat["low"] == stat["high"]:
            return f"{stat['mean']:.{digits}f}"
        joint = " to " if stat["low"] < 0 else "-"  # "(-0.4 to 8.0)", not "(-0.4-8.0)"
        return f"{stat['mean']:.{digits}f} ({stat['low']:.{digits}f}{joint}{stat['high']:.{digits}f})"

    lines = [f"| policy | greedy pass@1 | sampled pass@1 | gain over SFT, same seed (points) | pass@{k} | "
             "KL to SFT (nats) | wall s | sampled pass@1 per seed |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    sft_values = results["sft"]["sampled_accuracy"]["values"]
    for name, row in results.items():
        per_seed = ", ".join(f"{v:.3f}" for v in row["sampled_accuracy"]["values"])
        gain = "-" if name == "sft" else cell(dict(zip(("mean", "low", "high"), interval(
            [100 * (v - s) for v, s in zip(row["sampled_accuracy"]["values"], sft_values)]))), 1)
        lines.append(f"| {name} | {cell(row['greedy_accuracy'])} | {cell(row['sampled_accuracy'])} | {gain} | "
                     f"{cell(row['pass_at_k'])} | {cell(row['kl_to_ref'], 2)} | {row['wall_s']['mean']:.0f} | {per_seed} |")
    sft = results["sft"]["sampled_accuracy"]["mean"]
    best = max((n for n in results if n != "sft"), key=lambda n: results[n]["sampled_accuracy"]["mean"], default=None)
    if best:
        gain = results[best]["sampled_accuracy"]["mean"] - sft
        lines.append(f"\nbest: {best}, sampled pass@1 {gain * 100:+.1f} points over SFT "
                     f"(seeds {', '.join(map(str, seeds))}; 95% intervals over seeds in brackets)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--algos", default=None, help="comma-separated `rlhf ppo --algo` names (default: the plan's)")
    parser.add_argument("--steps", type=int, default=None, help="RL steps (default: the plan's)")
    parser.add_argument("--lr", type=float, default=None, help="RL learning rate (default: the plan's)")
    parser.add_argument("--samples", type=int, default=None, help="samples per prompt (default: the plan's)")
    parser.add_argument("--batch", type=int, default=None, help="prompts per RL step (default: the plan's)")
    parser.add_argument("--max-operand", type=int, default=None, help="operands 0..N (default: the plan's)")
    parser.add_argument("--sft-epochs", type=float, default=None, help="SFT epochs (default: the plan's)")
    parser.add_argument("--quick", action="store_true", help="the --quick plan (a smoke test, not a measurement)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default="runs/bench-arithmetic")
    args = parser.parse_args(argv)

    import torch

    from rlhf.demo.arithmetic_pipeline import FULL, QUICK, plan_with
    from rlhf.runtime.device import machine_facts

    if args.threads:
        torch.set_num_threads(args.threads)
    changes = {key: value for key, value in (("rl_steps", args.steps), ("rl_lr", args.lr), ("rl_samples", args.samples),
                                             ("rl_batch", args.batch), ("max_operand", args.max_operand),
                                             ("sft_epochs", args.sft_epochs)) if value}
    if args.algos:
        changes["algos"] = tuple(a.strip() for a in args.algos.split(",") if a.strip())
    plan = plan_with(QUICK if args.quick else FULL, **changes)
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summaries = [run_seed(out, seed, plan, args.quick) for seed in seeds]
    results = aggregate(summaries)
    table = format_markdown(results, plan.eval_k, seeds)
    facts = machine_facts()
    print(f"\n{table}\n\nmachine: {facts}\nplan: {plan}\nwall: {time.perf_counter() - started:.0f} s")
    (out / "results.md").write_text(table + "\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps({"results": results, "seeds": seeds, "plan": repr(plan),
                                                  "machine": facts}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
