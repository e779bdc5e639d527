"""Benchmark: `rlhf dpo` against TRL's DPOTrainer, same model, data and settings, fp32 and bf16.

    python bench/dpo.py [--model DIR] [--data FILE] [--steps 30] [--batch-size 8] [--max-length 256]
                        [--precisions fp32,bf16] [--arch llama|gpt2] [--out runs/bench-dpo]

Without --model a randomly initialised model is built (our Llama preset, or a GPT-2 with
--arch gpt2); without --data, comparisons {"prompt", "chosen", "rejected"} are cut from the
bundled TinyStories text. Every measured run is a fresh subprocess (`--_worker`), one at a time.

Both sides: the sigmoid DPO loss with beta 0.1; reference log-probabilities PRECOMPUTED once
before training by the starting policy (ours always does; TRL with `precompute_ref_log_probs=True`),
so neither holds a reference model during training and the precomputation is outside the timing;
the same model directory (fp32 weights, SDPA attention), rows, batch size (comparisons per step:
2x that many sequences per forward, chosen and rejected concatenated on both sides), max length,
optimiser steps, learning rate (no warm-up, cosine to 10%), AdamW betas/eps, weight decay (0),
gradient clipping (1.0) and seed; no gradient accumulation, no padding-free batches, no gradient
checkpointing, no evaluation, no checkpoints. Pairs come in the same random order on both sides,
so the losses match step by step; with --group-by-length both sides batch pairs of similar length
together instead (ours: its default `group_by_length`; TRL: `train_sampling_strategy="group_by_length"`
of the transformers Trainer), and the padding each side reaches is printed. bf16 = autocast to bfloat16
with fp32 weights on ours, `bf16=True` (with `use_cpu=True`) on TRL; fp32 = no autocast. CPU only.

tokens/s = non-padding tokens (attention-mask sum over chosen and rejected rows) of the batches
trained in steps W+1..N, divided by the wall time from the end of step W to the end of step N
(W = --warmup-steps). Peak MB = the worker process's peak resident memory (VmHWM), imports and
model load included; train +MB = the peak during the training call minus the resident memory it
started from.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DtypeProbe,
    timed_trainer,
    PhasePeak,
    build_model_dir,
    format_table,
    run_worker,
    split_sentences,
    throughput,
    cpu,
    machine,
)
from efficiency import (EFFICIENCY_HEADERS, compare_sides, describe_peak, describe_targets, flop_note,  # noqa: E402
                        matmul_params, matmul_peak, verdict, whole_process_s)

SPEED_TARGET, MEMORY_TARGET = 1.5, 1.0
BETA = 0.1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="Hugging Face causal LM directory (default: build one, see --arch/--preset)")
    p.add_argument("--data", help="comparisons file (default: prompt/chosen/rejected rows cut from TinyStories)")
    p.add_argument("--arch", choices=("llama", "gpt2"), default="llama", help="architecture of the built model")
    p.add_argument("--preset", choices=("tiny", "small"), help="size of the built model (default: small for llama "
                   "and gpt2: n_embd 256, 6 layers)")
    p.add_argument("--steps", type=int, default=30, help="optimiser steps per run")
    p.add_argument("--warmup-steps", type=int, default=2, help="first steps left out of the timing")
    p.add_argument("--batch-size", type=int, default=8, help="comparisons per optimiser step")
    p.add_argument("--max-length", type=int, default=256, help="tokens per prompt + response")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", type=int, help="comparisons to build (default: max(200, steps * batch size))")
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated, from fp32 and bf16")
    p.add_argument("--threads", type=int, help="torch/OpenMP threads in both workers (default: torch's choice); "
                   "1 is steadier on a machine shared with other jobs")
    p.add_argument("--group-by-length", action="store_true",
                   help="both sides batch pairs of similar length together (default: the same random order on both)")
    p.add_argument("--repeats", type=int, default=1, help="runs per side and precision, alternating; medians reported")
    p.add_argument("--out", default="runs/bench-dpo", help="directory for the model, data, runs and results.json")
    p.add_argument("--_worker", choices=("ours", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--_spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
    if not args.precisions or set(args.precisions) - {"fp32", "bf16"}:
        p.error("--precisions takes fp32 and/or bf16")
    if args.steps <= args.warmup_steps:
        p.error("--steps must be larger than --warmup-steps")
    args.preset = args.preset or "small"
    return args


# ---------------------------------------------------------------- data


def make_comparisons(model_dir: Path, path: Path, n_rows: int, max_length: int) -> Path:
    """Write `n_rows` {"prompt", "chosen", "rejected"} rows cut from TinyStories to `path` (JSONL).

    The prompt is a story's opening sentence (two if the first is short); chosen is the rest of
    that story and rejected the rest of the next story, each cut at a sentence end so that prompt +
    response + EOS fits in `max_length` tokens. No row needs truncating, and since responses start
    with a space and prompts end on punctuation, tokenising prompt and response apart (rlhf) or
    joined (TRL) gives the same ids: both train on the same tokens.
    """
    from transformers import AutoTokenizer

    from rlhf.data.formats import read_documents
    from rlhf.resources import TINYSTORIES_TRAIN

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    count = lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"])  # noqa: E731

    def cut(sentences: list[str], budget: int) -> str:
        text = ""
        for sentence in sentences:
            if count(text + sentence) > budget:
                break
            text += sentence
        return text

    stories = []
    for doc in read_documents(TINYSTORIES_TRAIN):
        sentences = split_sentences(" ".join(doc.text.split()))
        n_prompt = 2 if len(sentences) > 2 and len(sentences[0].split()) < 6 else 1
        if len(sentences) > n_prompt + 1:
            stories.append(("".join(sentences[:n_prompt]).strip(), sentences[n_prompt:]))
        if len(stories) > 2 * n_rows + 10:
            break
    rows = []
    for (prompt, own), (_, other) in zip(stories, stories[1:]):
        budget = max_length - 1 - count(prompt)  # one token for EOS
        chosen, rejected = cut(own, budget), cut(other, budget)
        if chosen.startswith(" ") and rejected.startswith(" ") and chosen.strip() and rejected.strip():
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        if len(rows) == n_rows:
            break
    if len(rows) < n_rows:
        raise ValueError(f"the corpus gave only {len(rows)} comparisons of the {n_rows} needed")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------- workers (one run each)


def worker_ours(spec: dict) -> dict:
    """Train with `rlhf.train.dpo.run` and read per-step times and tokens from its metrics.jsonl.

    The stage is untouched: `loop.fit` is wrapped only to mark the training phase for memory,
    `direct_alignment.collate_pairs` only to count padded tokens, `dpo.load_policy` only to attach a DtypeProbe.
    """
    import torch

    from rlhf.config import DPOConfig
    from rlhf.train import direct_alignment, dpo, loop

    peak, padded, probes = PhasePeak(), [0], []
    fit, collate_pairs, load_policy = loop.fit, direct_alignment.collate_pairs, dpo.load_policy

    def marked_fit(*args, **kwargs):
        peak.start()
        try:
            return fit(*args, **kwargs)
        finally:
            peak.stop()

    def counted_collate(pairs, pad_id, *args):
        batch = collate_pairs(pairs, pad_id, *args)
        padded[0] += batch["input_ids"].numel()
        return batch

    def probed_policy(*args, **kwargs):
        model, tokenizer = load_policy(*args, **kwargs)
        probes.append(DtypeProbe(model))
        return model, tokenizer

    loop.fit, direct_alignment.collate_pairs, dpo.load_policy = marked_fit, counted_collate, probed_policy
    out = Path(spec["out"])
    shutil.rmtree(out, ignore_errors=True)
    cfg = DPOConfig(model=spec["model"], data=spec["data"], out=str(out), seed=spec["seed"], max_steps=spec["steps"],
                    batch_size=spec["batch_size"], grad_accum=1, lr=spec["lr"], warmup_steps=0, weight_decay=0.0,
                    max_grad_norm=1.0, max_length=spec["max_length"], precision=spec["precision"], loss="dpo",
                    beta=BETA, group_by_length=spec["group_by_length"], kl_prompts=0, save_every=0, log_every=1, progress=False,
                    device="cpu")
    t0 = time.perf_counter()
    dpo.run(cfg)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((out / "summary.json").read_text())
    records = [{"step": 0, "t": 0.0, "tokens": 0}]
    records += [{"step": m["step"], "t": m["elapsed_s"], "tokens": m["tokens"]} for m in metrics]
    return {"records": records, "losses": [m["loss"] for m in metrics], "padded_tokens": padded[0], **peak.as_dict(),
            "dtypes": probes[0].describe(), "setup_s": summary["wall_s"] - summary["train_wall_s"],
            "reference_s": summary["reference_s"], "total_s": time.perf_counter() - t0,
            "threads": torch.get_num_threads()}


def worker_trl(spec: dict) -> dict:
    """Train with TRL's DPOTrainer; a callback stamps the end of each optimiser step."""
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from rlhf.data.formats import read_comparisons

    rows = []
    for c in read_comparisons(spec["data"]):
        if not isinstance(c.prompt, str):
            raise ValueError("the DPO benchmark takes plain-text comparisons")
        rows.append({"prompt": c.prompt, "chosen": c.chosen, "rejected": c.rejected})
    if spec["group_by_length"]:  # the transformers sampler reads each row's length from the "length" column
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(spec["model"])
        count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
        for row in rows:
            row["length"] = count(row["prompt"]) + max(count(row["chosen"]), count(row["rejected"]))
    args = DPOConfig(
        output_dir=spec["out"], seed=spec["seed"], max_steps=spec["steps"], per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1, learning_rate=spec["lr"], warmup_steps=0,
        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1}, weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8, max_grad_norm=1.0, max_length=spec["max_length"],
        loss_type=["sigmoid"], beta=BETA, precompute_ref_log_probs=True, padding_free=False,
        gradient_checkpointing=False, bf16=spec["precision"] == "bf16", fp16=False, use_cpu=True, report_to="none",
        dataloader_num_workers=0, dataloader_drop_last=True, save_strategy="no", eval_strategy="no", logging_steps=1,
        disable_tqdm=True, train_sampling_strategy="group_by_length" if spec["group_by_length"] else "random",
    )
    t0 = time.perf_counter()
    trainer_class = DPOTrainer
    if spec["group_by_length"]:
        class LengthKeepingDPOTrainer(DPOTrainer):
            """Keeps the "length" column through TRL's removal of unused columns, for the sampler."""

            def _set_signature_columns_if_needed(self):
                super()._set_signature_columns_if_needed()
                if "length" not in self._signature_columns:
                    self._signature_columns = [*self._signature_columns, "length"]

        trainer_class = LengthKeepingDPOTrainer
    trainer, records = timed_trainer(trainer_class, model=spec["model"], args=args, train_dataset=Dataset.from_list(rows))
    setup_s = time.perf_counter() - t0
    if trainer.ref_model is not None or not trainer.precompute_ref_logps:
        raise RuntimeError("TRL is not on the precomputed-reference path this benchmark assumes")
    peak, probe = PhasePeak(), DtypeProbe(trainer.model)
    peak.start()
    trainer.train()
    peak.stop()
    mixed = trainer.accelerator.mixed_precision
    return {"records": records, "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
            "padded_tokens": trainer.padded_tokens, **peak.as_dict(), "setup_s": setup_s,
            "total_s": time.perf_counter() - t0,
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
                        "lr": args.lr, "seed": args.seed, "precision": precision, "threads": args.threads,
                        "group_by_length": args.group_by_length}
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
    matmul peak; `params`: the policy's matmul parameters)."""
    med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    headers = ["precision", "ours tok/s", "TRL tok/s", "speed x", "ours peak MB", "TRL peak MB", "memory x",
               "ours train +MB", "TRL train +MB", "ours setup s", "TRL setup s", *EFFICIENCY_HEADERS]
    rows, summary, notes = [], {}, []
    for precision, sides in raw.items():
        keys = ("tokens_per_s", "peak_mb", "train_growth_mb", "setup_s")
        s = {side: {k: med(runs, k) for k in keys} for side, runs in sides.items()}
        s["speed_ratio"] = s["ours"]["tokens_per_s"] / s["trl"]["tokens_per_s"]
        s["memory_ratio"] = s["ours"]["peak_mb"] / s["trl"]["peak_mb"]
        s["target_met"] = s["speed_ratio"] >= SPEED_TARGET and s["memory_ratio"] <= MEMORY_TARGET
        # Both sides precompute the reference log-probabilities before the timed steps: no frozen
        # forward pass is in the loop, so only the policy's 6 x params x tokens counts.
        compared = compare_sides("dpo", sides["ours"], sides["trl"], precision, peak, params,
                                 preset=None if args.model else args.preset)
        for side in ("ours", "trl"):
            s[side].update(compared[side])
        s.update(whole_ratio=compared["whole_ratio"], issue12_targets=compared["targets"])
        summary[precision] = s
        rows.append([precision, s["ours"]["tokens_per_s"], s["trl"]["tokens_per_s"], s["speed_ratio"], s["ours"]["peak_mb"],
                     s["trl"]["peak_mb"], s["memory_ratio"], s["ours"]["train_growth_mb"], s["trl"]["train_growth_mb"],
                     s["ours"]["setup_s"], s["trl"]["setup_s"], *compared["cells"]])
        for side, runs in sides.items():
            r = runs[0]
            per_row = r["timed_tokens"] / (r["timed_steps"] * 2 * args.batch_size)
            notes.append(f"  {precision} {side:>4}: {r['dtypes']}; {r['threads']} threads; "
                         f"{per_row:.1f} tokens/sequence, "
                         f"padding {r['padded_tokens'] / r['records'][-1]['tokens'] - 1:+.1%}; loss "
                         f"{r['losses'][0]:.4f} -> {r['losses'][-1]:.4f}"
                         + (f"; {r['optimizer']}" if "optimizer" in r else ""))
    met = "  ".join(f"{p}: {'met' if s['target_met'] else 'NOT met'}" for p, s in summary.items())
    text = "\n".join([
        cpu(), describe_peak(peak), "",
        format_table(headers, rows), "",
        f"target: speed x >= {SPEED_TARGET} and memory x <= {MEMORY_TARGET:.2f} at each precision -> {met}",
        describe_targets("dpo") + " -> " + "  ".join(f"{p}: {verdict(s['issue12_targets'])}" for p, s in summary.items()),
        flop_note(f"{params:,} trained parameters") + " The reference's forward passes (2 x params x tokens) "
        "are precomputed before the timed steps on both sides, so the in-loop figure has none; whole s includes them.",
        f"tok/s: non-padding tokens (chosen + rejected rows) of steps {args.warmup_steps + 1}..{args.steps} / wall time "
        f"from the end of step {args.warmup_steps} to the end of step {args.steps}; medians of {args.repeats} run(s); "
        f"{'both sides length-grouped' if args.group_by_length else 'the same random order on both sides'}.",
        "peak MB: peak RSS (VmHWM) of the worker process, imports and model load included; "
        "train +MB: peak RSS during the training call minus the RSS when it started (what training itself adds).",
        "setup s: from the stage/trainer call to the first training step: loading, tokenising, reference precompute.",
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
    rows = args.rows or max(200, args.steps * args.batch_size)
    data = Path(args.data) if args.data else make_comparisons(model_dir, out / "comparisons.jsonl", rows,
                                                              args.max_length)
    print(f"model {model_dir}, data {data}, {args.steps} steps x {args.batch_size} comparisons, "
          f"max length {args.max_length}")
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
