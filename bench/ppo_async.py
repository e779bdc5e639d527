"""Benchmark: `rlhf ppo --async-staleness K` against the synchronous loop, at the demo's PPO and GRPO
settings (rlhf.demo.plan.FULL: PPO 32 prompts x 1, 4 update epochs; GRPO 16 prompts x 4, one
update; 48 new tokens, the reward model, the gold oracle logged), same seed, same prompts.

    python bench/ppo_async.py [--model runs/sft/model] [--reward-model runs/rm/model] [--algos grpo,ppo]
                              [--staleness 1] [--steps 8] [--warmup-steps 2] [--repeats 1] [--out runs/bench-ppo-async]

Each run is `python -m rlhf.cli ppo` in a fresh process, the sides alternating per repeat so
that all see the same load: sync with the machine's default thread count, sync with one thread
(on a machine other processes load, two OpenMP threads can lose more to waiting for each other
than they gain), and async, whose learner keeps the default count and whose sampler takes half
(summary.json's async_threads). Step time = wall time from the end
of step W (--warmup-steps: the async worker's start-up and the first, synchronous, step are in
it) to the end of step N - 1, over N - 1 - W (the last step is left out: with nothing left to
sample, an async run's last update has the machine to itself); medians over repeats. TRL's AsyncGRPOTrainer is
compared in bench/ppo.py (`--async-staleness K --trl-async-python VENV/bin/python`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu, format_table, machine  # noqa: E402

SETTINGS = {  # rlhf.demo.pipeline's ppo() at the FULL plan
    "ppo": ["--batch-size", "32", "--minibatch-size", "32", "--update-epochs", "4"],
    "grpo": ["--batch-size", "16", "--num-samples", "4", "--minibatch-size", "64"],
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="runs/sft/model", help="the SFT policy (the demo's runs/sft/model)")
    p.add_argument("--reward-model", default="runs/rm/model", help="the reward model (the demo's runs/rm/model)")
    p.add_argument("--prompts", default=None, help="prompts file (default: the demo's training openings)")
    p.add_argument("--algos", default="grpo,ppo")
    p.add_argument("--staleness", type=int, default=1, help="K of the async runs")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--no-one-thread", action="store_true", help="leave out the one-thread sync side")
    p.add_argument("--out", default="runs/bench-ppo-async")
    args = p.parse_args(argv)
    args.algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    if set(args.algos) - set(SETTINGS) or args.steps <= args.warmup_steps + 1 or args.staleness < 1:
        p.error("--algos among ppo, grpo; --steps > --warmup-steps + 1; --staleness >= 1")
    return args


def run_once(args, algo: str, staleness: int, out: Path, prompts: Path, env: dict) -> dict:
    command = [sys.executable, "-m", "rlhf.cli", "ppo", "--model", args.model, "--data", str(prompts),
               "--reward", args.reward_model, "--gold", "rlhf.demo.oracle:gold_reward", "--algo", algo,
               "--kl-coef", "0.05", "--max-new-tokens", "48", "--max-length", "128", "--lr", "5e-5",
               "--samples-every", "5", "--precision", "fp32", "--no-progress", "--save-every", "0",
               "--max-steps", str(args.steps), "--async-staleness", str(staleness), "--overwrite",
               "--out", str(out), *SETTINGS[algo]]
    t = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
    whole = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    at = {line["step"]: line["elapsed_s"] for line in lines}
    summary = json.loads((out / "summary.json").read_text())
    last = args.steps - 1  # the last step is left out: the async worker has nothing left to sample during it
    return {"step_s": (at[last] - at[args.warmup_steps]) / (last - args.warmup_steps),
            "whole_s": whole, "reward": [line["reward"] for line in lines],
            "staleness": [line.get("async/staleness", 0.0) for line in lines],
            "threads": summary.get("async_threads"), "response_length": summary.get("response_length")}


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = Path(args.prompts) if args.prompts else default_prompts(out)
    print(cpu(), flush=True)
    load_before = os.getloadavg()
    sides = [("sync", 0, {}), ("sync-1-thread", 0, {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}),
             ("async", args.staleness, {})]
    sides = [side for side in sides if not (args.no_one_thread and side[0] == "sync-1-thread")]
    results, rows = {}, []
    for algo in args.algos:
        runs = {name: [] for name, _, _ in sides}
        for repeat in range(args.repeats):
            for name, k, env in sides:
                print(f"  {algo} {name} (K={k}) run {repeat + 1} ...", flush=True)
                runs[name].append(run_once(args, algo, k, out / f"{algo}-{name}-{repeat}", prompts, env))
        med = {name: {key: statistics.median(r[key] for r in runs[name]) for key in ("step_s", "whole_s")}
               for name in runs}
        ratios = {name: med["async"]["step_s"] / med[name]["step_s"] for name in runs if name != "async"}
        results[algo] = {"runs": runs, "median": med, "async_step_ratio": ratios}
        for name in runs:
            rows.append([algo, name, med[name]["step_s"], ratios.get(name, 1.0), med[name]["whole_s"],
                         str(runs[name][0]["threads"] or "")])
    load = (f"load average (1/5/15 min) before {'/'.join(f'{x:.1f}' for x in load_before)}, after "
            f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    print("\n" + cpu() + "\n")
    print(format_table(["algo", "side", "s/step", f"async K={args.staleness} / side x", "whole s",
                        "async threads"], rows))
    print(f"\nsteps {args.warmup_steps + 1}..{args.steps - 1} timed, medians of {args.repeats} run(s) per side; {load}")
    (out / "results.json").write_text(json.dumps({"config": vars(args), "machine": machine(), "load": load,
                                                  "results": results}, indent=2, default=str) + "\n")
    print(f"wrote {out / 'results.json'}")
    return 0


def default_prompts(out: Path) -> Path:
    from rlhf.demo.tasks import story_prompts

    path = out / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p.prompt}) + "\n" for p in story_prompts("train", 512, seed=0)))
    return path


if __name__ == "__main__":
    sys.exit(main())
