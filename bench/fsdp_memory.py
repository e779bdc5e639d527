"""MEASURED per-rank memory of training a ~110M-parameter Llama (random weights, built from
transformers' LlamaConfig: nothing downloaded) for a few SFT-style steps with AdamW, fp32, on CPU
processes over gloo: 1 process, 2 data-parallel (`--sharding none`), 2 and 4 with `--sharding
fsdp2`. Each setting runs under torchrun (one process alone), through rlhf's runtime object
(`rt.prepare`, `rt.reduce_gradients`, `rt.clip_gradients`: the code `rlhf sft` runs).

Run: `python bench/fsdp_memory.py [--steps 3] [--seq-len 128]`. It prints the table, writes
docs/fsdp-memory-measured.json, and `python bench/scaling.py` quotes it in docs/scaling.md beside
what the memory model there predicts for the same setting. Two more comparisons print their
figures and write nothing (docs/distributed.md quotes them):
`--precision-pair`: 2 processes under fsdp2 training in fp32 and in bf16 (FSDP2's mixed
precision; bf16 only where the CPU has it natively, else the run says it computed in fp32);
`--frozen-pair`: a frozen reward model (the same Llama body with a one-label head) on 2 processes,
whole on each rank (`--no-shard-frozen`) and sharded (`rt.prepare_frozen`), running no-grad
forwards as PPO's scoring does.

Per rank it records:
- state: the bytes of this rank's parameters, gradients and AdamW state, counted from the live
  tensors after the last step (a sharded parameter: its local shard);
- peak: the resident-set high-water mark (VmHWM in /proc/self/status) while training, minus the
  resident set before the model was built (the peak is reset after the build with
  /proc/self/clear_refs): state plus activations, the units FSDP2 gathers for the forward and
  backward, the unsharded gradients before their reduce-scatter, communication buffers and the
  allocator's slack;
- build: the same high-water mark over building the model and `rt.prepare` (every rank builds the
  whole model, receives rank 0's weights, then keeps its shard: not sharded yet).
Large allocations are mmapped (MALLOC_MMAP_THRESHOLD_) so that freed tensors leave the resident
set, as they leave a GPU's allocator.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ROOT / "docs" / "fsdp-memory-measured.json"
SETTINGS = ((1, "none"), (2, "none"), (2, "fsdp2"), (4, "fsdp2"))  # (processes, sharding)
MB = 2**20


def llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                       num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=512,
                       tie_word_embeddings=True, attn_implementation="sdpa")


def _status_kb(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM back to the current resident set


def _local_bytes(tensors) -> int:
    return sum((t.to_local() if hasattr(t, "to_local") else t).nbytes for t in tensors if t is not None)


def worker(args) -> None:
    """One rank: build, prepare (shard), train `args.steps` steps; rank 0 prints every rank's figures."""
    from types import SimpleNamespace

    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from rlhf import runtime
    from rlhf.runtime import dist

    torch.set_num_threads(1)
    cfg = SimpleNamespace(sharding=args.sharding, gradient_checkpointing=args.gradient_checkpointing, seed=0,
                          device="cpu", dist_timeout=1800.0, lora_r=0, precision=args.precision,
                          shard_frozen=not args.whole_frozen)
    rt = runtime.init(cfg, run_dir=False)
    dist.state()  # the process group and its buffers belong to the baseline
    dist.barrier()
    if args.frozen:
        return frozen_worker(rt, args)
    from transformers import LlamaForCausalLM

    baseline_kb = _status_kb("VmRSS")
    _reset_peak()
    model = LlamaForCausalLM(llama_config())
    model = rt.prepare(model)
    model.train()
    build_kb = _status_kb("VmHWM") - baseline_kb
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    generator = torch.Generator().manual_seed(rt.rank)
    dist.barrier()
    _reset_peak()
    times, grads_bytes = [], 0
    for _ in range(args.steps):
        ids = torch.randint(32000, (args.batch, args.seq_len), generator=generator)
        start = time.perf_counter()
        with rt.autocast():  # as every stage runs its forward: bf16 where asked and native
            loss = model(input_ids=ids, labels=ids).loss / rt.world_size  # summed over ranks: the global mean
        loss.backward()
        rt.reduce_gradients(params)
        rt.clip_gradients(params, 1.0)
        grads_bytes = _local_bytes(p.grad for p in params)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    peak_kb = _status_kb("VmHWM") - baseline_kb
    moments = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    mine = {"rank": rt.rank, "params_mb": _local_bytes(params) / MB, "grads_mb": grads_bytes / MB,
            "optimizer_mb": _local_bytes(moments) / MB, "peak_mb": peak_kb * 1024 / MB,
            "build_mb": build_kb * 1024 / MB, "step_s": statistics.median(times[1:] or times)}
    mine["state_mb"] = mine["params_mb"] + mine["grads_mb"] + mine["optimizer_mb"]
    ranks = dist.gather_objects(mine)
    if rt.is_main:
        print("RESULT " + json.dumps({"processes": rt.world_size, "sharding": rt.sharding, "precision": rt.precision,
                                      "param_count": sum(p.numel() for p in model.parameters()), "ranks": ranks}))
    dist.shutdown()


def frozen_worker(rt, args) -> None:
    """One rank holding a frozen reward model (whole, or sharded by `rt.prepare_frozen`) through
    `args.steps` no-grad forwards, each followed by a reshard as `RewardModel.score_examples` does
    (a sharded model's root unit, the embeddings, stays gathered after a forward otherwise): the
    bytes of its parameters this rank holds, the resident set before and after the forwards and
    the peak during them, above the baseline."""
    import torch
    from transformers import LlamaForSequenceClassification

    from rlhf.runtime import dist, sharding

    baseline_kb = _status_kb("VmRSS")
    _reset_peak()
    config = llama_config()
    config.num_labels, config.pad_token_id = 1, 0
    model = LlamaForSequenceClassification(config).eval().requires_grad_(False)
    rt.prepare_frozen(reward=model)
    held_mb = _local_bytes(model.parameters()) / MB
    build_kb = _status_kb("VmHWM") - baseline_kb
    prepared_kb = _status_kb("VmRSS") - baseline_kb
    generator = torch.Generator().manual_seed(rt.rank)
    dist.barrier()
    _reset_peak()
    times = []
    with torch.no_grad():
        for _ in range(args.steps):
            ids = torch.randint(1, 32000, (args.batch, args.seq_len), generator=generator)
            start = time.perf_counter()
            with rt.autocast():
                model(input_ids=ids)
            sharding.reshard(model)  # the root unit back to its shard, as rlhf's reward scoring leaves it
            times.append(time.perf_counter() - start)
    mine = {"rank": rt.rank, "params_mb": held_mb, "peak_mb": (_status_kb("VmHWM") - baseline_kb) * 1024 / MB,
            "after_mb": (_status_kb("VmRSS") - baseline_kb) * 1024 / MB, "build_mb": build_kb * 1024 / MB,
            "prepared_mb": prepared_kb * 1024 / MB,
            "forward_s": statistics.median(times[1:] or times)}
    ranks = dist.gather_objects(mine)
    if rt.is_main:
        print("RESULT " + json.dumps({"processes": rt.world_size, "sharded": rt.lockstep, "precision": rt.precision,
                                      "param_count": sum(p.numel() for p in model.parameters()), "ranks": ranks}))
    dist.shutdown()


def run_setting(processes: int, sharding: str, args) -> dict:
    flags = ["--worker", "--sharding", sharding, "--steps", str(args.steps), "--batch", str(args.batch),
             "--seq-len", str(args.seq_len), "--precision", args.precision]
    flags += [f"--{name.replace('_', '-')}" for name in ("gradient_checkpointing", "frozen", "whole_frozen")
              if getattr(args, name)]
    if processes == 1:
        command = [sys.executable, __file__, *flags]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                   "--master_addr", "127.0.0.1", "--master_port", str(port), __file__, *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536", "TRANSFORMERS_VERBOSITY": "error",
           "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{processes} x {sharding} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def modelled_state_mb(param_count: int, processes: int, sharding: str) -> float:
    """What bench/scaling.py's memory model says for one rank's parameters, gradients and AdamW
    state (16 bytes per parameter, divided over the ranks when sharded)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scaling import state_bytes

    strategy = "FSDP2" if sharding == "fsdp2" else "DDP"
    return sum(state_bytes(param_count, strategy, processes).values()) / MB


def table(measured: dict) -> list[str]:
    """The markdown table of `measured` (as main writes it): the largest rank of each setting, and
    its ratios to the one-process figures."""
    rows = measured["settings"]
    one = max(rows[0]["ranks"], key=lambda r: r["peak_mb"])
    lines = ["| processes | sharding | state MB (params + grads + AdamW) | modelled state MB | params + AdamW x 1 proc "
             "| peak MB above baseline | peak x 1 proc | build peak MB | s/step |", "|" + "---|" * 9]
    for row in rows:
        rank = max(row["ranks"], key=lambda r: r["peak_mb"])
        held = (rank["params_mb"] + rank["optimizer_mb"]) / (one["params_mb"] + one["optimizer_mb"])
        lines.append(f"| {row['processes']} | {row['sharding']} | {rank['state_mb']:,.0f} | "
                     f"{modelled_state_mb(row['param_count'], row['processes'], row['sharding']):,.0f} | {held:.2f}x | "
                     f"{rank['peak_mb']:,.0f} | {rank['peak_mb'] / one['peak_mb']:.2f}x | {rank['build_mb']:,.0f} | "
                     f"{rank['step_s']:.2f} |")
    return lines


def section(measured: dict | None) -> list[str]:
    """docs/scaling.md's section on this bench."""
    lines = ["## Measured: per-rank memory under FSDP2 on CPU processes", ""]
    if measured is None:
        return lines + ["Not measured yet: run `python bench/fsdp_memory.py`."]
    m = measured
    return lines + [
        f"MEASURED by `python bench/fsdp_memory.py` on {m['machine']['cpu']} ({m['machine']['cores']} cores, shared "
        f"with other jobs; load average {m['load_average'][0]:.1f} before, {m['load_average'][1]:.1f} after) on "
        f"{m['when']}, torch {m['torch']}, gloo: a {m['param_count'] / 1e6:.0f}M-parameter Llama (random weights; "
        f"hidden 768, 12 layers, vocab 32000, tied head), fp32, AdamW, {m['steps']} steps of {m['batch']} x "
        f"{m['seq_len']} tokens per rank, one thread per process. Every rank of a setting is within a few MB of "
        "the largest, shown here. *state*: the bytes of the rank's parameters, gradients and optimiser state, "
        "counted from its tensors; *modelled*: what the memory model above says for the same setting (16 bytes "
        "per parameter, over the ranks when sharded); *peak*: the resident set's high-water mark while training "
        "minus the resident set before the model was built (state, activations, the units gathered for the "
        "forward and backward, unsharded gradients before their reduce-scatter, buffers); *build*: the same "
        "over building the model and `rt.prepare` (every rank builds the whole model before keeping its shard).",
        "", *table(m), "", *reading(m),
    ]


def reading(measured: dict) -> list[str]:
    """What the table says against the issue's targets, from its own figures."""
    rows = {(row["processes"], row["sharding"]): max(row["ranks"], key=lambda r: r["peak_mb"])
            for row in measured["settings"]}
    one, two, four = rows[(1, "none")], rows.get((2, "fsdp2")), rows.get((4, "fsdp2"))
    if two is None or four is None:
        return []
    held = lambda r: (r["params_mb"] + r["optimizer_mb"]) / (one["params_mb"] + one["optimizer_mb"])  # noqa: E731
    config = llama_config()
    root_mb = config.vocab_size * config.hidden_size * 4 / MB
    return [
        f"Parameters plus optimiser state per rank under FSDP2: {held(two):.2f}x the single process at 2 processes "
        f"and {held(four):.2f}x at 4 (the targets: at most 0.55x and 0.3x). The whole training peak shrinks less, "
        f"{two['peak_mb'] / one['peak_mb']:.2f}x and {four['peak_mb'] / one['peak_mb']:.2f}x, because part of it "
        f"does not shrink with the process count: {two['peak_mb'] - two['state_mb']:,.0f} MB and "
        f"{four['peak_mb'] - four['state_mb']:,.0f} MB above the state, against "
        f"{one['peak_mb'] - one['state_mb']:,.0f} MB in one process (activations, the same per-rank batch). The "
        f"bench does not break the difference down; it is the size of what FSDP2 holds whole for a while: the "
        f"root unit (the embeddings, which are also the tied head: {root_mb:,.0f} MB in fp32) gathered from the "
        "forward to the backward, and that unit's unsharded gradient before its reduce-scatter (the memory model "
        "above counts this term as two gathered units). It weighs more here than at 7B, where one layer or the embeddings are a small part of the model. "
        "Data-parallel (`none`) on 2 processes holds the whole state on each rank, and its peak adds the flat "
        "buffer its gradients are all-reduced in. The build peak is the whole model on every rank (built, then "
        "rank 0's weights received, then sharded): building on the meta device would shard it too (not done).",
        "", "s/step: 2 and 4 processes share 2 cores (and the machine), so the times say nothing about speed.",
    ]


def checkpointing_pair(args) -> None:
    """The activation memory that --gradient-checkpointing saves, one process, the same batch."""
    for on in (False, True):
        args.gradient_checkpointing = on
        rank = run_setting(1, "none", args)["ranks"][0]
        print(f"gradient checkpointing {'on ' if on else 'off'}: peak {rank['peak_mb']:,.0f} MB above baseline, of "
              f"which {rank['peak_mb'] - rank['state_mb']:,.0f} MB above the state; {rank['step_s']:.2f} s/step")


def precision_pair(args) -> None:
    """2 processes under fsdp2 training in fp32 and in bf16: per-rank state, peak and step time."""
    for precision in ("fp32", "bf16"):
        args.precision = precision
        row = run_setting(2, "fsdp2", args)
        for rank in row["ranks"]:
            print(f"asked {precision}, ran {row['precision']}, rank {rank['rank']}: state {rank['state_mb']:,.0f} MB "
                  f"(params {rank['params_mb']:,.0f}), peak {rank['peak_mb']:,.0f} MB above baseline, "
                  f"{rank['step_s']:.2f} s/step")


def frozen_pair(args) -> None:
    """A frozen reward model on 2 processes, whole on each rank and sharded: per-rank figures."""
    args.frozen = True
    for whole in (True, False):
        args.whole_frozen = whole
        row = run_setting(2, "fsdp2", args)
        for rank in row["ranks"]:
            kind = "whole  " if whole else "sharded"
            print(f"{kind} rank {rank['rank']}: parameters held {rank['params_mb']:,.0f} MB"
                  f" of {row['param_count'] * 4 / MB:,.0f}, {rank['prepared_mb']:,.0f} MB before the forwards, "
                  f"peak {rank['peak_mb']:,.0f} MB above baseline, "
                  f"{rank['after_mb']:,.0f} MB after the forwards, build {rank['build_mb']:,.0f} MB, "
                  f"{rank['forward_s']:.2f} s/forward")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sharding", default="none")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1, help="sequences per rank and step")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--gradient-checkpointing", action="store_true", help="(with --worker)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="(with --worker)")
    parser.add_argument("--frozen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--whole-frozen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing-pair", action="store_true",
                        help="instead: one process with and without --gradient-checkpointing, printed, nothing written")
    parser.add_argument("--precision-pair", action="store_true",
                        help="instead: 2 processes under fsdp2 in fp32 and in bf16, printed, nothing written")
    parser.add_argument("--frozen-pair", action="store_true",
                        help="instead: a frozen reward model on 2 processes, whole and sharded; printed only")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.checkpointing_pair:
        return checkpointing_pair(args)
    if args.precision_pair or args.frozen_pair:
        sys.path.insert(0, str(ROOT / "src"))
        from rlhf.runtime.device import machine_facts

        print(f"{machine_facts()['cpu']}, load average {os.getloadavg()[0]:.1f} before", flush=True)
        precision_pair(args) if args.precision_pair else frozen_pair(args)
        print(f"load average {os.getloadavg()[0]:.1f} after, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        return None
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from rlhf.runtime.device import machine_facts

    load_before = os.getloadavg()[0]
    settings = []
    for processes, sharding in SETTINGS:
        settings.append(run_setting(processes, sharding, args))
        print(f"{processes} x {sharding}: done", file=sys.stderr, flush=True)
    measured = {"settings": settings, "param_count": settings[0]["param_count"], "steps": args.steps,
                "batch": args.batch, "seq_len": args.seq_len, "gradient_checkpointing": args.gradient_checkpointing,
                "machine": machine_facts(), "torch": torch.__version__,
                "load_average": [load_before, os.getloadavg()[0]],
                "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    MEASURED.write_text(json.dumps(measured, indent=2) + "\n", encoding="utf-8")
    print("\n".join(table(measured)))
    print(f"wrote {MEASURED.relative_to(ROOT)}; run python bench/scaling.py to quote it in docs/scaling.md")


if __name__ == "__main__":
    main()
