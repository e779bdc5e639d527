"""`rlhf dpo --online` with `--rollout-engine vllm` against rlhf's own sampler, and the cost of a
LoRA policy's weight sync (its adapters merged first) against a full one (docs/vllm.md has the
figures). Run it in the vllm venv (docs/vllm.md):

    OMP_NUM_THREADS=2 PYTHONPATH=src vllm-venv/bin/python bench/vllm_online.py --rounds 3 --prompts 32

On the shipped base model, fp32, the same prompts (the first six words of the shipped TinyStories
validation stories that open with "Once upon a time"), the demo's oracle labelling pairs: three
online DPO runs through the CLI (`--rollout-engine rlhf`, `vllm`, and `vllm` with `--lora-r 8`),
each round's sampling seconds (with the engine, the weight sync before it included), the sync's
own seconds, the labelled pairs and the round's last training loss, the whole run's seconds.
Then, on one engine, --repeats weight syncs of the plain model and of a LoRA-wrapped one (r 8,
every linear adapted), timed one by one. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def online_run(base: Path, prompts: Path, out: Path, engine: str, lora_r: int, args) -> dict:
    from rlhf import cli

    t = time.perf_counter()
    assert cli.main(["dpo", "--online", "--model", str(base), "--data", str(prompts), "--labeler", "oracle",
                     "--rollout-engine", engine, "--lora-r", str(lora_r), "--rounds", str(args.rounds),
                     "--prompts-per-round", str(args.prompts), "--samples-per-prompt", "2",
                     "--max-new-tokens", str(args.tokens), "--max-length", "128", "--batch-size", "8",
                     "--lr", "1e-4" if lora_r else "1e-5", "--kl-prompts", "0", "--precision", "fp32",
                     "--no-progress", "--out", str(out)]) == 0
    wall = time.perf_counter() - t
    rounds = [json.loads((out / "rounds" / f"round-{r}" / "round.json").read_text()) for r in range(args.rounds)]
    return {"wall_s": round(wall, 1), "sample_s": [round(r["sample_s"], 2) for r in rounds],
            "sync_s": [round(r["engine/sync_s"], 3) for r in rounds if "engine/sync_s" in r],
            "pairs": [r["pairs"] for r in rounds], "train_loss": [round(r["train_loss"], 4) for r in rounds]}


def sync_times(base: Path, repeats: int) -> dict:
    from rlhf.models.load import add_lora, load_causal_lm
    from rlhf.rollout.vllm_sampler import PolicyEngine

    engine = PolicyEngine(str(base), 128, 0)
    policies = {"full": load_causal_lm(str(base)), "lora_r8": add_lora(load_causal_lm(str(base)), 8, 16, 0.0)}
    times = {name: [] for name in policies}
    for version in range(repeats):
        for name, policy in policies.items():
            t = time.perf_counter()
            engine.sync(policy, version=2 * version + (name == "lora_r8"))
            times[name].append(time.perf_counter() - t)
    engine.close()
    return {f"sync_{name}_s_median": round(statistics.median(ts), 3) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from rlhf.resources import BASE_MODEL

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    figures: dict = {"threads": torch.get_num_threads(), "load_before": os.getloadavg()[0]}
    with gzip.open(BASE_MODEL.parent / "tinystories" / "validation.txt.gz", "rt", encoding="utf-8") as stories:
        openings = [" ".join(line.split()[:6]) for line in stories if line.startswith("Once upon a time")]
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in openings[: args.prompts * args.rounds]),
                           encoding="utf-8")
        for name, engine, lora_r in (("rlhf", "rlhf", 0), ("vllm", "vllm", 0), ("vllm_lora_r8", "vllm", 8)):
            figures[name] = online_run(BASE_MODEL, prompts, Path(tmp) / name, engine, lora_r, args)
    figures.update(sync_times(BASE_MODEL, args.repeats), load_after=os.getloadavg()[0])
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
