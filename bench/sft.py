"""Benchmark: `rlhf sft` against TRL's SFTTrainer, same model, data and settings, fp32 and bf16.

    python bench/sft.py [--model DIR] [--data FILE] [--steps 30] [--batch-size 8] [--max-length 256]
                        [--precisions fp32,bf16] [--arch llama|gpt2] [--out runs/bench-sft]

Without --model a randomly initialised model is built (our Llama preset, or a GPT-2 with
--arch gpt2); without --data, prompt/completion demonstrations are cut from the bundled
TinyStories text. Every measured run is a fresh subprocess (`--_worker`), run one at a time.

Both sides: same model directory (fp32 weights, SDPA attention), same rows, batch size, max
length, number of optimiser steps, learning rate, AdamW betas/eps, weight decay (0), gradient
clipping (1.0), seed; no gradient accumulation, no packing or padding-free batches (right-padding
to the longest row of the batch), no gradient checkpointing, no evaluation, no checkpoints,
completion-only loss. bf16 = autocast to bfloat16 with fp32 weights on ours, `bf16=True` (with
`use_cpu=True`) on TRL; fp32 = no autocast, `bf16=False, fp16=False`. CPU only.

tokens/s = non-padding tokens (attention-mask sum) of the batches trained in steps
W+1..N, divided by the wall time from the end of step W to the end of step N (W = --warmup-steps,
default 2). Peak MB = the worker process's peak resident memory (VmHWM), imports and model load
included; train +MB = the peak during the training call minus the resident memory it started from.
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
from common import (DtypeProbe, PhasePeak, build_model_dir, cpu, format_table, machine, make_demonstrations,  # noqa: E402
                    run_worker, throughput, timed_trainer)
from efficiency import (EFFICIENCY_HEADERS, compare_sides, describe_peak, describe_targets, flop_note,  # noqa: E402
                        matmul_params, matmul_peak, verdict, whole_process_s)

SPEED_TARGET, MEMORY_TARGET = 1.5, 1.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="Hugging Face causal LM directory (default: build one, see --arch/--preset)")
    p.add_argument("--data", help="demonstrations file (default: prompt/completion rows cut from TinyStories)")
    p.add_argument("--arch", choices=("llama", "gpt2"), default="llama", help="architecture of the built model")
    p.add_argument("--preset", choices=("tiny", "small"), help="size of the built model (default: tiny for llama, "
                   "small for gpt2: n_embd 256, 6 layers)")
    p.add_argument("--steps", type=int, default=30, help="optimiser steps per run")
    p.add_argument("--warmup-steps", type=int, default=2, help="first steps left out of the timing")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", type=int, help="demonstrations to build (default: max(400, steps * batch size))")
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated, from fp32 and bf16")
    p.add_argument("--threads", type=int, help="torch/OpenMP threads in both workers (default: torch's choice); "
                   "1 is steadier on a machine shared with other jobs")
    p.add_argument("--repeats", type=int, default=1, help="runs per side and precision, alternating; medians reported")
    p.add_argument("--out", default="runs/bench-sft", help="directory for the model, data, runs and results.json")
    p.add_argument("--_worker", choices=("ours", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--_spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
    if not args.precisions or set(args.precisions) - {"fp32", "bf16"}:
        p.error("--precisions takes fp32 and/or bf16")
    if args.steps <= args.warmup_steps:
        p.error("--steps must be larger than --warmup-steps")
    args.preset = args.preset or ("small" if args.arch == "gpt2" else "tiny")
    return args


# ---------------------------------------------------------------- workers (one run each)


def worker_ours(spec: dict) -> dict:
    """Train with `rlhf.train.sft.run` and read per-step times and tokens from its metrics.jsonl.

    The stage is untouched: `loop.fit` is wrapped only to mark the training phase for memory,
    `sft.make_batch` only to count padded tokens, `sft.load_policy` only to attach a DtypeProbe.
    """
    import torch

    from rlhf.config import SFTConfig
    from rlhf.train import loop, sft

    peak, padded, probes = PhasePeak(), [0], []
    fit, make_batch, load_policy = loop.fit, sft.make_batch, sft.load_policy

    def marked_fit(*args, **kwargs):
        peak.start()
        try:
            return fit(*args, **kwargs)
        finally:
            peak.stop()

    def counted_batch(examples, pad_id):
        batch = make_batch(examples, pad_id)
        padded[0] += batch["input_ids"].numel()
        return batch

    def probed_policy(*args, **kwargs):
        model, tokenizer = load_policy(*args, **kwargs)
        probes.append(DtypeProbe(model))
        return model, tokenizer

    loop.fit, sft.make_batch, sft.load_policy = marked_fit, counted_batch, probed_policy
    out = Path(spec["out"])
    shutil.rmtree(out, ignore_errors=True)
    cfg = SFTConfig(model=spec["model"], data=spec["data"], out=str(out), seed=spec["seed"], max_steps=spec["steps"],
                    batch_size=spec["batch_size"], grad_accum=1, lr=spec["lr"], warmup_steps=spec["lr_warmup"],
                    weight_decay=0.0, max_grad_norm=1.0, max_length=spec["max_length"], precision=spec["precision"],
                    packing=False, save_every=0, log_every=1, progress=False, device="cpu")
    sft.run(cfg)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((out / "summary.json").read_text())
    records = [{"step": 0, "t": 0.0, "tokens": 0}]
    records += [{"step": m["step"], "t": m["elapsed_s"], "tokens": m["tokens"]} for m in metrics]
    return {"records": records, "losses": [m["loss"] for m in metrics], "padded_tokens": padded[0], **peak.as_dict(),
            "dtypes": probes[0].describe(), "summary_tokens_per_s": summary["tokens_per_s"],
            "threads": torch.get_num_threads()}


def trl_rows(data: str) -> list[dict]:
    """The demonstrations as TRL prompt-completion rows (plain text, or conversational messages)."""
    from rlhf.data.formats import read_demonstrations
    from rlhf.data.records import is_conversation

    rows = []
    for d in read_demonstrations(data):
        if is_conversation(d.prompt):
            rows.append({"prompt": [{"role": m.role, "content": m.content} for m in d.prompt],
                         "completion": [{"role": "assistant", "content": d.completion}]})
        else:
            rows.append({"prompt": d.prompt, "completion": d.completion})
    return rows


def worker_trl(spec: dict) -> dict:
    """Train with TRL's SFTTrainer; a callback stamps the end of each optimiser step."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    bf16 = spec["precision"] == "bf16"
    args = SFTConfig(
        output_dir=spec["out"], seed=spec["seed"], max_steps=spec["steps"], per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1, learning_rate=spec["lr"], warmup_steps=spec["lr_warmup"],
        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1}, weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8, max_grad_norm=1.0, max_length=spec["max_length"],
        packing=False, padding_free=False, gradient_checkpointing=False, bf16=bf16, fp16=False, use_cpu=True,
        report_to="none", dataloader_num_workers=0, dataloader_drop_last=True, save_strategy="no", eval_strategy="no",
        logging_steps=1, disable_tqdm=True,
    )
    trainer, records = timed_trainer(SFTTrainer, model=spec["model"], args=args,
                                     train_dataset=Dataset.from_list(trl_rows(spec["data"])))
    if not trainer.completion_only_loss or trainer.padding_free or args.packing:
        raise RuntimeError("TRL is not on the completion-only, padded, unpacked path this benchmark assumes")
    peak, probe = PhasePeak(), DtypeProbe(trainer.model)
    peak.start()
    trainer.train()
    peak.stop()
    mixed = trainer.accelerator.mixed_precision
    return {"records": records, "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
            "padded_tokens": trainer.padded_tokens, **peak.as_dict(),
            "dtypes": f"{probe.describe()} (accelerate mixed_precision={mixed}, "
                      f"autocast={'yes' if trainer.accelerator.native_amp else 'no'})",
            "optimizer": f"optim={getattr(args.optim, 'value', args.optim)}, "
                         f"fused={bool(trainer.optimizer.defaults.get('fused'))}",
            "threads": torch.get_num_threads()}


# ---------------------------------------------------------------- driver


def measure(args, script: Path, out: Path, model_dir: Path, data: Path) -> dict:
    """Run every (precision, repeat, side) worker in turn; return the raw results per precision."""
    raw: dict[str, dict[str, list]] = {}
    for precision in args.precisions:
        raw[precision] = {"ours": [], "trl": []}
        for repeat in range(args.repeats):
            for side in ("ours", "trl"):
                name = f"{side}-{precision}-{repeat}"
                spec = {"model": str(model_dir), "data": str(data), "out": str(out / "runs" / name),
                        "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
                        "lr": args.lr, "lr_warmup": 0, "seed": args.seed, "precision": precision,
                        "threads": args.threads}
                spec_path, result_path = out / "runs" / f"{name}.spec.json", out / "runs" / f"{name}.result.json"
                spec_path.parent.mkdir(parents=True, exist_ok=True)
                spec_path.write_text(json.dumps({**spec, "result": str(result_path)}))
                print(f"  running {name} ...", flush=True)
                env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)} if args.threads else {}
                result = run_worker(script, ["--_worker", side, "--_spec", str(spec_path)], result_path,
                                    out / "runs" / f"{name}.log", env)
                result.update(throughput(result["records"], args.warmup_steps))
                raw[precision][side].append(result)
    return raw


def summarise(raw: dict, args, peak: dict, params: int) -> tuple[str, dict]:
    """The printed report and the per-precision medians for results.json (`peak`: the machine's
    matmul peak; `params`: the model's matmul parameters)."""
    med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    headers = ["precision", "ours tok/s", "TRL tok/s", "speed x", "ours peak MB", "TRL peak MB", "memory x",
               "ours train +MB", "TRL train +MB", *EFFICIENCY_HEADERS]
    rows, summary, notes = [], {}, []
    for precision, sides in raw.items():
        s = {side: {k: med(runs, k) for k in ("tokens_per_s", "peak_mb", "train_growth_mb")} for side, runs in sides.items()}
        s["speed_ratio"] = s["ours"]["tokens_per_s"] / s["trl"]["tokens_per_s"]
        s["memory_ratio"] = s["ours"]["peak_mb"] / s["trl"]["peak_mb"]
        s["target_met"] = s["speed_ratio"] >= SPEED_TARGET and s["memory_ratio"] <= MEMORY_TARGET
        compared = compare_sides("sft", sides["ours"], sides["trl"], precision, peak, params,
                                 preset=None if args.model else args.preset)
        for side in ("ours", "trl"):
            s[side].update(compared[side])
        s.update(whole_ratio=compared["whole_ratio"], issue12_targets=compared["targets"])
        summary[precision] = s
        rows.append([precision, s["ours"]["tokens_per_s"], s["trl"]["tokens_per_s"], s["speed_ratio"], s["ours"]["peak_mb"],
                     s["trl"]["peak_mb"], s["memory_ratio"], s["ours"]["train_growth_mb"], s["trl"]["train_growth_mb"],
                     *compared["cells"]])
        for side, runs in sides.items():
            r = runs[0]
            per_example = r["timed_tokens"] / (r["timed_steps"] * args.batch_size)
            notes.append(f"  {precision} {side:>4}: {r['dtypes']}; {r['threads']} threads; "
                         f"{per_example:.1f} tokens/example, "
                         f"padding {r['padded_tokens'] / r['records'][-1]['tokens'] - 1:+.1%}; loss "
                         f"{r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}"
                         + (f"; {r['optimizer']}" if "optimizer" in r else ""))
    met = "  ".join(f"{p}: {'met' if s['target_met'] else 'NOT met'}" for p, s in summary.items())
    text = "\n".join([
        cpu(), describe_peak(peak), "",
        format_table(headers, rows), "",
        f"target: speed x >= {SPEED_TARGET} and memory x <= {MEMORY_TARGET:.2f} at each precision -> {met}",
        describe_targets("sft") + " -> " + "  ".join(f"{p}: {verdict(s['issue12_targets'])}" for p, s in summary.items()),
        flop_note(f"{params:,} trained parameters"),
        f"tok/s: non-padding (attention-mask) tokens of steps {args.warmup_steps + 1}..{args.steps} / wall time from the "
        f"end of step {args.warmup_steps} to the end of step {args.steps}; medians of {args.repeats} run(s).",
        "peak MB: peak RSS (VmHWM) of the worker process, imports and model load included; "
        "train +MB: peak RSS during the training call minus the RSS when it started (what training itself adds).",
        *notes,
    ])
    return text, summary


def main(argv: list[str] | None = None) -> int:
    """Build what is missing, run the workers, print the table and write results.json."""
    args = parse_args(argv)
    if args._worker:
        spec = json.loads(Path(args._spec).read_text())
        if spec["threads"]:
            import torch

            torch.set_num_threads(spec["threads"])
        result = (worker_ours if args._worker == "ours" else worker_trl)(spec)
        result["whole_process_s"] = whole_process_s()
        Path(spec["result"]).write_text(json.dumps(result))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = Path(args.model) if args.model else build_model_dir(out / f"model-{args.arch}-{args.preset}",
                                                                     args.arch, args.preset)
    rows = args.rows or max(400, args.steps * args.batch_size)
    data = Path(args.data) if args.data else make_demonstrations(model_dir, out / "demonstrations.jsonl", rows,
                                                                 args.max_length)
    print(f"model {model_dir}, data {data}, {args.steps} steps x {args.batch_size} rows, max length {args.max_length}")
    if args.threads:  # the parent's torch too, so that cpu() and the matmul peak show the workers' count
        import torch

        torch.set_num_threads(args.threads)
    print(cpu(), flush=True)
    peak, params = matmul_peak(args.threads), matmul_params(model_dir)
    print(describe_peak(peak), flush=True)
    load_before = os.getloadavg()
    raw = measure(args, Path(__file__).resolve(), out, model_dir, data)
    text, summary = summarise(raw, args, peak, params)
    load = f"load average (1/5/15 min) before {'/'.join(f'{x:.1f}' for x in load_before)}, after " \
           f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
    print("\n" + text + "\n" + load)
    config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    results = {"config": {**config, "model": str(model_dir), "data": str(data)}, "machine": machine(),
               "matmul_peak": peak, "matmul_params": params, "summary": summary, "load": load, "runs": raw}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
