"""Rollout speed and log-prob gap of `--rollout-engine vllm` against rlhf's own KV-cache sampler
(docs/vllm.md has the figures). Run it in the vllm venv (docs/vllm.md):

    OMP_NUM_THREADS=2 PYTHONPATH=src vllm-venv/bin/python bench/vllm_rollout.py --prompts 64 --tokens 48

On the shipped base model, fp32 both, the same prompts (the first six words of the shipped TinyStories validation stories that open with
"Once upon a time") and the
same per-row seeds, temperature 1: the response tokens per second of each sampler in each of
--repeats rounds after a warm-up round, the two taking turns within a round so that both meet the
same load (a shared machine's load moves a lot), their medians and the ratio round by round; the
engine's weight sync is timed apart, and over the engine's
samples the gap mean |log pi_engine - log pi_trainer| and its max, the trainer's log-probs from
`rlhf.rollout.logprobs.response_logprobs` (what TIS compares). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from rlhf.config import PPOConfig
    from rlhf.data.tokenize import encode_prompt
    from rlhf.models.load import load_causal_lm, load_tokenizer
    from rlhf.resources import BASE_MODEL
    from rlhf.rollout.generate import SamplingConfig
    from rlhf.rollout.kv_sampler import KVCacheSampler
    from rlhf.rollout.logprobs import response_logprobs
    from rlhf.rollout.vllm_sampler import VLLMSampler

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    tokenizer, policy = load_tokenizer(str(BASE_MODEL)), load_causal_lm(str(BASE_MODEL)).eval()
    cfg = PPOConfig(model=str(BASE_MODEL), data="unused", reward="unused:unused", max_new_tokens=args.tokens,
                    max_length=256, precision="fp32")
    with gzip.open(BASE_MODEL.parent / "tinystories" / "validation.txt.gz", "rt", encoding="utf-8") as stories:
        openings = [" ".join(line.split()[:6]) for line in stories if line.startswith("Once upon a time")]
    rows = [encode_prompt(tokenizer, p) for p in openings[: args.prompts]]
    seeds = list(range(len(rows)))
    samplers = {"rlhf": KVCacheSampler(tokenizer, None, cfg, 1), "vllm": VLLMSampler(tokenizer, None, cfg, 1)}
    samplers["vllm"].engine.sync(policy, version=0)
    figures: dict = {"prompts": len(rows), "max_new_tokens": args.tokens, "threads": torch.get_num_threads(),
                     "sync_s": round(samplers["vllm"].engine.sync_s, 3), "load_before": os.getloadavg()[0]}
    rollouts, speeds = {}, {name: [] for name in samplers}
    for sampler in samplers.values():
        sampler.sampling = SamplingConfig(args.tokens, 1.0)
    for round_ in range(args.repeats + 1):  # the samplers take turns, so that both meet the same load
        for name, sampler in samplers.items():
            t = time.perf_counter()
            rollouts[name] = sampler.generate_rows(policy, rows, seeds)
            if round_:  # the first round warms up
                speeds[name].append(float(rollouts[name].response_mask.sum()) / (time.perf_counter() - t))
    for name, measured in speeds.items():
        figures[f"{name}_tokens_per_s"] = [round(v) for v in measured]
        figures[f"{name}_tokens_per_s_median"] = round(statistics.median(measured))
    figures["vllm_over_rlhf_by_round"] = [round(v / r, 2) for v, r in zip(speeds["vllm"], speeds["rlhf"])]
    engine = rollouts["vllm"]
    with torch.no_grad():
        gap = (response_logprobs(policy, engine) - engine.logprobs)[engine.response_mask.bool()].abs()
    figures.update(gap_mean=float(gap.mean()), gap_max=float(gap.max()), load_after=os.getloadavg()[0])
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
