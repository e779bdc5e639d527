"""How fast a bench run is against this machine and against its targets: the worker's whole-process
time, the machine's measured matmul peak, the fraction of it a training run reaches, and the targets
of issue 12 checked against the ratios. Kept apart from common.py, which holds the rest of what the
benches share, to keep both short.

- **whole-process seconds**: wall time from the moment the parent spawns a worker (it passes
  `time.time()` in `SPAWN_TIME_ENV` just before `subprocess.run`) to the end of that worker's
  training call: interpreter start, imports, data and model loading and training all included. A
  worker started by hand has no stamp and falls back to the process start time of /proc/self/stat
  (to a second: the boot time in /proc/stat is whole seconds).
- **matmul peak**: best GFLOP/s of square fp32 and bf16 matrix products (512, 1024, 2048) on the
  bench's thread count, best of a few runs, measured once per process.
- **fraction of peak**: achieved training FLOP/s / peak FLOP/s of the precision the run computed in,
  with FLOP/s = (6 x trained parameters + 2 x forward-only parameters) x tokens per second. The
  parameters are those of the matrix products (every parameter except embedding tables, whose
  lookup is no product; a tied LM head counts); attention's score/value products (T^2 terms) are
  left out, so the fraction is a slight underestimate.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

SPAWN_TIME_ENV = "RLHF_BENCH_SPAWN_TIME"

# Issue 12's targets: ours / TRL, in-loop tokens/s and whole-process seconds alike.
SPEED_TARGETS = {"sft": 1.5, "rm": 1.5, "dpo": 1.5, "ppo": 2.0, "rloo": 2.0, "grpo": 2.0}
# Training at least this fraction of the fp32 matmul peak, on the small preset (fp32 runs).
PEAK_FRACTION_TARGET = 0.5


# ---------------------------------------------------------------- whole-process time


def proc_start_time(pid: str = "self") -> float:
    """When process `pid` started, in seconds since the epoch, from /proc (Linux only).

    Field 22 of /proc/PID/stat is the start time in clock ticks after boot; /proc/stat's `btime`
    is the boot time in whole seconds, so the result is good to about a second."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    after_name = stat[stat.rindex(")") + 2:].split()  # the name (field 2) may hold spaces
    start_ticks = int(after_name[22 - 3])
    boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime "))
    return boot + start_ticks / os.sysconf("SC_CLK_TCK")


def process_start_time(environ: dict | None = None) -> float:
    """When this worker's clock started (epoch seconds): the parent's spawn stamp, else /proc."""
    stamp = (os.environ if environ is None else environ).get(SPAWN_TIME_ENV)
    if stamp:
        return float(stamp)
    return proc_start_time()


def whole_process_s(environ: dict | None = None) -> float:
    """Seconds since this worker was spawned (see `process_start_time`): call it when training ends."""
    return time.time() - process_start_time(environ)


# ---------------------------------------------------------------- matmul peak


@functools.cache
def matmul_peak(threads: int | None = None, sizes: tuple[int, ...] = (512, 1024, 2048), repeats: int = 5,
                slow_s: float = 1.0) -> dict:
    """This machine's matmul peak: the best GFLOP/s (2 n^3 / s) of n x n fp32 and bf16 products.

    Each size runs once to warm up, then `repeats` times; the best time counts. Where one product
    takes over `slow_s` seconds (bf16 emulated on a CPU without avx512_bf16/AMX runs some 45 times
    slower than fp32) the larger sizes are skipped. `threads` sets torch's thread count for the
    measurement (the bench's `--threads`; None keeps torch's default). Cached: once per process.
    Returns {"fp32_gflops", "bf16_gflops", "threads", "sizes"}."""
    import torch

    if not sizes or repeats < 1 or any(n < 1 for n in sizes):
        raise ValueError(f"matmul_peak needs positive sizes and repeats, got sizes={sizes}, repeats={repeats}")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        measured = {"threads": torch.get_num_threads(), "sizes": list(sizes)}
        generator = torch.Generator().manual_seed(0)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            best = 0.0
            for n in sizes:
                a, b = (torch.randn(n, n, generator=generator).to(dtype) for _ in range(2))
                torch.mm(a, b)
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    torch.mm(a, b)
                    times.append(time.perf_counter() - start)
                best = max(best, 2 * n ** 3 / max(min(times), 1e-9) / 1e9)
                if min(times) > slow_s:
                    break
            measured[f"{name}_gflops"] = best
    finally:
        torch.set_num_threads(before)
    return measured


def describe_peak(peak: dict) -> str:
    """One line for a printed table: the measured peaks and the thread count."""
    return (f"matmul peak ({peak['threads']} threads, square {'/'.join(map(str, peak['sizes']))}, best of runs): "
            f"fp32 {peak['fp32_gflops']:,.1f} GFLOP/s, bf16 {peak['bf16_gflops']:,.1f} GFLOP/s")


# ---------------------------------------------------------------- FLOP fraction


def matmul_params(model_dir: str | Path, head: str = "causal") -> int:
    """Parameters of `model_dir`'s matrix products: all but embedding tables (a tied LM head counts).

    `head` is "causal" (the LM head) or "reward" (a one-output sequence-classification head, as
    both sides of the reward-model bench build it). Built on the meta device: no weights are read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    if head == "reward":
        config.num_labels = 1
        build = AutoModelForSequenceClassification.from_config
    elif head == "causal":
        build = AutoModelForCausalLM.from_config
    else:
        raise ValueError(f"unknown head {head!r}; choose causal or reward")
    with torch.device("meta"):
        model = build(config)
    return sum(p.numel() for module in model.modules() if not isinstance(module, torch.nn.Embedding)
               for p in module.parameters(recurse=False))


def training_flops_per_s(tokens_per_s: float, trained_params: int, forward_params: int = 0) -> float:
    """Achieved FLOP/s of a training run: 6 x trained parameters x tokens/s (forward 2, backward 4
    per parameter and token) plus 2 x forward-only parameters x tokens/s (frozen models: DPO's
    reference, PPO's reference and reward model, sampling)."""
    if tokens_per_s < 0 or trained_params < 0 or forward_params < 0:
        raise ValueError(f"negative input: tokens_per_s={tokens_per_s}, trained_params={trained_params}, "
                         f"forward_params={forward_params}")
    return (6 * trained_params + 2 * forward_params) * tokens_per_s


def peak_fraction(flops_per_s: float, peak: dict, precision: str) -> float:
    """`flops_per_s` as a fraction of the measured peak of `precision` ("fp32" or "bf16")."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; choose fp32 or bf16")
    return flops_per_s / (peak[f"{precision}_gflops"] * 1e9)


def precision_used(result: dict, asked: str) -> str:
    """The precision a run's matmuls really ran in: its "precision_used" where the worker wrote one,
    else from its DtypeProbe line ("matmuls bfloat16, ..."), else the precision asked for."""
    if result.get("precision_used"):
        return result["precision_used"]
    dtypes = result.get("dtypes", "")
    if dtypes.startswith("matmuls "):
        return "bf16" if dtypes.startswith("matmuls bfloat16") else "fp32"
    return asked


def efficiency(result: dict, asked: str, peak: dict, trained_params: int, forward_params: int = 0,
               rate_key: str = "tokens_per_s") -> dict:
    """The FLOP figures of one run (its `rate_key` tokens/s): FLOP/s, precision, fraction of its peak."""
    used = precision_used(result, asked)
    flops = training_flops_per_s(result[rate_key], trained_params, forward_params)
    return {"flops_per_s": flops, "peak_precision": used, "peak_fraction": peak_fraction(flops, peak, used)}


# ---------------------------------------------------------------- targets


def check_targets(stage: str, in_loop_ratio: float, whole_ratio: float, ours_fraction: float, precision: str,
                  preset: str | None) -> dict:
    """Issue 12's targets for one row: ours / TRL at least SPEED_TARGETS[stage] in-loop (tokens/s) and
    whole-process (TRL's seconds / ours), and, for an fp32 run on the small preset, training at
    least PEAK_FRACTION_TARGET of the fp32 peak (None where that target does not apply)."""
    target = SPEED_TARGETS[stage]
    applies = precision == "fp32" and preset == "small"
    return {"in_loop": in_loop_ratio >= target, "whole_process": whole_ratio >= target,
            "peak_fraction": ours_fraction >= PEAK_FRACTION_TARGET if applies else None}


def describe_targets(stage: str) -> str:
    """The targets of `stage`, for the printed output."""
    return (f"targets (issue 12): in-loop x >= {SPEED_TARGETS[stage]} and whole x >= {SPEED_TARGETS[stage]}; "
            f"ours training >= {PEAK_FRACTION_TARGET:.0%} of the fp32 matmul peak on the small preset (fp32 runs)")


def verdict(checks: dict) -> str:
    """'in-loop met, whole NOT met, peak n/a' for one row's `check_targets`."""
    word = lambda ok: "n/a" if ok is None else ("met" if ok else "NOT met")  # noqa: E731
    return f"in-loop {word(checks['in_loop'])}, whole {word(checks['whole_process'])}, " \
           f"peak {word(checks['peak_fraction'])}"


# ---------------------------------------------------------------- one row of a bench's table

EFFICIENCY_HEADERS = ["ours whole s", "TRL whole s", "whole x", "ours %peak", "TRL %peak"]


def compare_sides(stage: str, ours_runs: list[dict], trl_runs: list[dict], asked: str, peak: dict,
                  trained_params: int, forward_params: int = 0, preset: str | None = None,
                  rate_key: str = "tokens_per_s", in_loop_key: str | None = None) -> dict:
    """Whole-process seconds, FLOP fraction and targets of one row (medians over repeats).

    Returns {"ours": {...}, "trl": {...}, "in_loop_ratio", "whole_ratio", "targets", "cells"}: each
    side's "whole_process_s", "flops_per_s", "peak_precision", "peak_fraction"; in_loop_ratio = ours
    / TRL `in_loop_key` (default `rate_key`, the tokens/s the FLOPs are counted on); whole_ratio = TRL's seconds / ours (above 1: ours faster); cells = the values
    for EFFICIENCY_HEADERS."""
    import statistics

    in_loop_key = in_loop_key or rate_key
    sides = {}
    for side, runs in (("ours", ours_runs), ("trl", trl_runs)):
        median = {key: statistics.median(r[key] for r in runs) for key in (rate_key, in_loop_key, "whole_process_s")}
        sides[side] = {"whole_process_s": median["whole_process_s"],
                       **efficiency({**runs[0], rate_key: median[rate_key]}, asked, peak, trained_params,
                                    forward_params, rate_key)}
        sides[side].update({rate_key: median[rate_key], in_loop_key: median[in_loop_key]})
    ours, trl = sides["ours"], sides["trl"]
    in_loop = ours[in_loop_key] / trl[in_loop_key]
    whole = trl["whole_process_s"] / ours["whole_process_s"]
    targets = check_targets(stage, in_loop, whole, ours["peak_fraction"], ours["peak_precision"], preset)
    return {"ours": ours, "trl": trl, "in_loop_ratio": in_loop, "whole_ratio": whole, "targets": targets,
            "cells": [ours["whole_process_s"], trl["whole_process_s"], whole, 100 * ours["peak_fraction"],
                      100 * trl["peak_fraction"]]}


def flop_note(trained: str, forward: str = "") -> str:
    """The printed statement of the FLOP formula a bench uses."""
    frozen = f" + 2 x {forward}" if forward else ""
    return (f"%peak: (6 x {trained}{frozen}) x tokens/s / measured matmul peak of the precision the matmuls ran "
            "in; parameters = those of the matrix products (embedding tables left out), attention's T^2 products "
            "left out. whole s: wall time from spawning the worker to the end of its training call (interpreter "
            "start, imports, data and model loading included); whole x = TRL's seconds / ours.")
