"""Benchmark: `rlhf rm` against TRL's RewardTrainer, same model, data and settings, fp32 and bf16.

    python bench/rm.py [--model DIR] [--data FILE] [--steps 30] [--batch-size 8] [--max-length 256]
                       [--precisions fp32,bf16] [--no-packing] [--out runs/bench-rm]

Without --model a randomly initialised causal LM is built (our Llama preset, `--preset tiny`);
both sides turn it into a sequence classifier with one output (a value head on the last token).
Without --data, comparisons are cut from the bundled TinyStories text: the prompt is a story's
opening, `chosen` its continuation, `rejected` the first half of that continuation's sentences.
Every measured run is a fresh subprocess (`--_worker`), run one at a time.

Both sides: same model directory (fp32 weights, SDPA attention), same pairs (every one fits
--max-length, so neither truncates nor drops any), pairs per step, number of optimiser steps,
learning rate (no warm-up, cosine to 10%), AdamW betas/eps, weight decay (0), gradient clipping
(1.0), seed; dropout off; chosen and rejected of a batch in one forward pass; Bradley-Terry loss;
no gradient accumulation, no gradient checkpointing, no evaluation, no checkpoints. Each side
keeps its own batching: TRL pads the 2B sequences of a batch to the longest of them and draws
pairs in random order; ours draws pairs of similar length together (`group_by_length`) and
packs the 2B sequences into rows (padding-free), both its defaults; with --no-packing it pads
them to a multiple of 8 instead.
bf16 = autocast to bfloat16 with fp32 weights on both sides. CPU only.

tokens/s = non-padding tokens (attention-mask sum) of the batches trained in steps W+1..N,
divided by the wall time from the end of step W to the end of step N (W = --warmup-steps).
Peak MB = the worker process's peak resident memory (VmHWM), imports and model load included;
train +MB = the peak during the training call minus the resident memory it started from.
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
                    run_worker, split_sentences, throughput, timed_trainer)
from efficiency import (EFFICIENCY_HEADERS, compare_sides, describe_peak, describe_targets, flop_note,  # noqa: E402
                        matmul_params, matmul_peak, verdict, whole_process_s)

SPEED_TARGET, MEMORY_TARGET = 1.5, 1.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="Hugging Face causal LM directory (default: build a Llama, see --preset)")
    p.add_argument("--data", help="comparisons file (default: pairs cut from TinyStories); rows that do not fit "
                   "--max-length are left out on both sides")
    p.add_argument("--preset", choices=("tiny", "small"), default="tiny", help="size of the built Llama")
    p.add_argument("--steps", type=int, default=30, help="optimiser steps per run")
    p.add_argument("--warmup-steps", type=int, default=2, help="first steps left out of the timing")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", type=int, help="pairs to build (default: max(400, steps * batch size))")
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated, from fp32 and bf16")
    p.add_argument("--no-packing", dest="packing", action="store_false",
                   help="ours pads length-grouped batches instead of packing them into rows (its default)")
    p.add_argument("--threads", type=int, help="torch/OpenMP threads in both workers (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=1, help="runs per side and precision, alternating; medians reported")
    p.add_argument("--out", default="runs/bench-rm", help="directory for the model, data, runs and results.json")
    p.add_argument("--_worker", choices=("ours", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--_spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
    if not args.precisions or set(args.precisions) - {"fp32", "bf16"}:
        p.error("--precisions takes fp32 and/or bf16")
    if args.steps <= args.warmup_steps:
        p.error("--steps must be larger than --warmup-steps")
    return args


# ---------------------------------------------------------------- data


def make_comparisons(model_dir: Path, path: Path, n_rows: int, max_length: int) -> Path:
    """`n_rows` {"prompt", "chosen", "rejected"} rows from TinyStories demonstrations that fit
    `max_length`: rejected is the first half (by sentences, at least one) of the chosen continuation."""
    demos = make_demonstrations(model_dir, path.with_name("demonstrations.jsonl"), n_rows, max_length)
    rows = []
    for line in demos.read_text(encoding="utf-8").splitlines():
        demo = json.loads(line)
        sentences = split_sentences(demo["completion"])
        rejected = "".join(sentences[: max(1, len(sentences) // 2)])
        rows.append({"prompt": demo["prompt"], "chosen": demo["completion"], "rejected": rejected})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def fitting_comparisons(model_dir: Path, data: Path, out: Path, max_length: int) -> tuple[Path, int, int]:
    """The rows of `data` whose chosen and rejected both fit `max_length` tokens untruncated
    (TRL drops longer rows, ours would truncate them), written to `out` as JSONL."""
    from rlhf.data.formats import read_comparisons
    from rlhf.data.records import is_conversation
    from rlhf.data.tokenize import encode_completion, encode_prompt
    from rlhf.models.load import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    pairs = read_comparisons(data)
    rows = []
    for pair in pairs:
        prompt_len = len(encode_prompt(tokenizer, pair.prompt))
        if all(prompt_len + len(encode_completion(tokenizer, pair.prompt, r)) <= max_length
               for r in (pair.chosen, pair.rejected)):
            prompt = [{"role": m.role, "content": m.content} for m in pair.prompt] if is_conversation(pair.prompt) \
                else pair.prompt
            rows.append({"prompt": prompt, "chosen": pair.chosen, "rejected": pair.rejected})
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out, len(rows), len(pairs)


def trl_rows(data: str) -> list[dict]:
    """Comparisons as TRL preference rows (explicit prompt; plain text or conversational)."""
    rows = []
    for line in Path(data).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if isinstance(row["prompt"], list):
            row = {"prompt": row["prompt"], "chosen": [{"role": "assistant", "content": row["chosen"]}],
                   "rejected": [{"role": "assistant", "content": row["rejected"]}]}
        rows.append(row)
    return rows


# ---------------------------------------------------------------- workers (one run each)


def worker_ours(spec: dict) -> dict:
    """Train with `rlhf.train.reward.run`; per-step times and tokens come from its metrics.jsonl.

    The stage is untouched: `loop.fit` is wrapped only to mark the training phase for memory,
    `reward.make_batch` only to count padded tokens, `reward.build_model` only to attach a DtypeProbe.
    """
    import torch

    from rlhf.config import RewardConfig
    from rlhf.train import loop, reward

    peak, padded, probes = PhasePeak(), [0], []
    fit, make_batch, build_model = loop.fit, reward.make_batch, reward.build_model

    def marked_fit(*args, **kwargs):
        peak.start()
        try:
            return fit(*args, **kwargs)
        finally:
            peak.stop()

    def counted_batch(*args, **kwargs):
        batch = make_batch(*args, **kwargs)
        padded[0] += batch["input_ids"].numel()
        return batch

    def probed_model(*args, **kwargs):
        model, tokenizer, input_format = build_model(*args, **kwargs)
        probes.append(DtypeProbe(model))
        return model, tokenizer, input_format

    loop.fit, reward.make_batch, reward.build_model = marked_fit, counted_batch, probed_model
    out = Path(spec["out"])
    shutil.rmtree(out, ignore_errors=True)
    cfg = RewardConfig(model=spec["model"], data=spec["data"], out=str(out), seed=spec["seed"], max_steps=spec["steps"],
                       batch_size=spec["batch_size"], grad_accum=1, lr=spec["lr"], warmup_steps=0, weight_decay=0.0,
                       max_grad_norm=1.0, max_length=spec["max_length"], precision=spec["precision"],
                       packing=spec["packing"], save_every=0, log_every=1, progress=False, device="cpu")
    reward.run(cfg)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    records = [{"step": 0, "t": 0.0, "tokens": 0}]
    records += [{"step": m["step"], "t": m["elapsed_s"], "tokens": m["tokens"]} for m in metrics]
    return {"records": records, "losses": [m["loss"] for m in metrics], "accuracies": [m["accuracy"] for m in metrics],
            "padded_tokens": padded[0], **peak.as_dict(), "dtypes": probes[0].describe(),
            "threads": torch.get_num_threads()}


def worker_trl(spec: dict) -> dict:
    """Train with TRL's RewardTrainer; a callback stamps the end of each optimiser step."""
    import torch
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    args = RewardConfig(
        output_dir=spec["out"], seed=spec["seed"], max_steps=spec["steps"], per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1, learning_rate=spec["lr"], warmup_steps=0,
        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1}, weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8, max_grad_norm=1.0, max_length=spec["max_length"],
        disable_dropout=True, gradient_checkpointing=False, bf16=spec["precision"] == "bf16", fp16=False, use_cpu=True,
        report_to="none", dataloader_num_workers=0, dataloader_drop_last=True, save_strategy="no", eval_strategy="no",
        logging_steps=1, disable_tqdm=True, model_init_kwargs={"attn_implementation": "sdpa"},
    )
    rows = trl_rows(spec["data"])
    trainer, records = timed_trainer(RewardTrainer, model=spec["model"], args=args, train_dataset=Dataset.from_list(rows))
    if len(trainer.train_dataset) != len(rows):
        raise RuntimeError(f"TRL dropped {len(rows) - len(trainer.train_dataset)} rows longer than max_length")
    peak, probe = PhasePeak(), DtypeProbe(trainer.model)
    peak.start()
    trainer.train()
    peak.stop()
    history = [h for h in trainer.state.log_history if "loss" in h]
    return {"records": records, "losses": [h["loss"] for h in history],
            "accuracies": [h.get("accuracy") for h in history], "padded_tokens": trainer.padded_tokens,
            **peak.as_dict(), "dtypes": f"{probe.describe()} (autocast={'yes' if trainer.accelerator.native_amp else 'no'})",
            "optimizer": f"optim={getattr(args.optim, 'value', args.optim)}", "threads": torch.get_num_threads()}


# ---------------------------------------------------------------- driver


def measure(args, script: Path, out: Path, model_dir: Path, data: Path) -> dict:
    raw: dict[str, dict[str, list]] = {}
    for precision in args.precisions:
        raw[precision] = {"ours": [], "trl": []}
        for repeat in range(args.repeats):
            for side in ("ours", "trl"):
                name = f"{side}-{precision}-{repeat}"
                spec = {"model": str(model_dir), "data": str(data), "out": str(out / "runs" / name),
                        "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
                        "lr": args.lr, "seed": args.seed, "precision": precision, "packing": args.packing,
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
    matmul peak; `params`: the reward model's matmul parameters)."""
    med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    headers = ["precision", "ours tok/s", "TRL tok/s", "speed x", "ours peak MB", "TRL peak MB", "memory x",
               "ours train +MB", "TRL train +MB", *EFFICIENCY_HEADERS]
    rows, summary, notes = [], {}, []
    for precision, sides in raw.items():
        s = {side: {k: med(runs, k) for k in ("tokens_per_s", "peak_mb", "train_growth_mb")} for side, runs in sides.items()}
        s["speed_ratio"] = s["ours"]["tokens_per_s"] / s["trl"]["tokens_per_s"]
        s["memory_ratio"] = s["ours"]["peak_mb"] / s["trl"]["peak_mb"]
        s["target_met"] = s["speed_ratio"] >= SPEED_TARGET and s["memory_ratio"] <= MEMORY_TARGET
        compared = compare_sides("rm", sides["ours"], sides["trl"], precision, peak, params,
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
            notes.append(f"  {precision} {side:>4}: {r['dtypes']}; {r['threads']} threads; padding "
                         f"{r['padded_tokens'] / r['records'][-1]['tokens'] - 1:+.1%}; loss {r['losses'][0]:.3f} -> "
                         f"{r['losses'][-1]:.3f}" + (f"; {r['optimizer']}" if "optimizer" in r else ""))
    met = "  ".join(f"{p}: {'met' if s['target_met'] else 'NOT met'}" for p, s in summary.items())
    text = "\n".join([
        cpu(), describe_peak(peak), "",
        format_table(headers, rows), "",
        f"target: speed x >= {SPEED_TARGET} and memory x <= {MEMORY_TARGET:.2f} at each precision -> {met}",
        describe_targets("rm") + " -> " + "  ".join(f"{p}: {verdict(s['issue12_targets'])}" for p, s in summary.items()),
        flop_note(f"{params:,} trained parameters (reward model, one-output head)"),
        f"tok/s: non-padding tokens of steps {args.warmup_steps + 1}..{args.steps} / wall time from the end of step "
        f"{args.warmup_steps} to the end of step {args.steps}; medians of {args.repeats} run(s). "
        f"ours: {'length-grouped, packed (padding-free)' if args.packing else 'length-grouped, padded'}; "
        "TRL: padded, random order.",
        "peak MB: peak RSS (VmHWM) of the worker process, imports and model load included; "
        "train +MB: peak RSS during the training call minus the RSS when it started.",
        *notes,
    ])
    return text, summary


def main(argv: list[str] | None = None) -> int:
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
    model_dir = Path(args.model) if args.model else build_model_dir(out / f"model-llama-{args.preset}", "llama", args.preset)
    if args.data:
        data, kept, total = fitting_comparisons(model_dir, Path(args.data), out / "comparisons.jsonl", args.max_length)
        print(f"{kept} of {total} pairs of {args.data} fit {args.max_length} tokens")
    else:
        rows = args.rows or max(400, args.steps * args.batch_size)
        data = make_comparisons(model_dir, out / "comparisons.jsonl", rows, args.max_length)
    print(f"model {model_dir}, data {data}, {args.steps} steps x {args.batch_size} pairs, max length {args.max_length}")
    if args.threads:  # the parent's torch too, so that cpu() and the matmul peak show the workers' count
        import torch

        torch.set_num_threads(args.threads)
    print(cpu(), flush=True)
    peak, params = matmul_peak(args.threads), matmul_params(model_dir, "reward")
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
