"""MEASURED, for docs/scaling.md: one training step and one forward pass of the default model on
this CPU (`python bench/scaling.py --measure` calls it and keeps the figures in
docs/scaling-measured.json)."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def measure_cpu(batch: int = 4, seq_len: int = 256, steps: int = 3, warmup: int = 1, threads: int = 1) -> dict:
    """MEASURED: one AdamW training step and one forward pass of the default model (the "small"
    preset, vocabulary 4096, fp32, random tokens) on this CPU, median of `steps` after `warmup`."""
    import os
    import statistics

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import efficiency
    from rlhf.models.tiny import PRESETS
    from rlhf.runtime.device import machine_facts

    p = PRESETS["small"]
    torch.set_num_threads(threads)  # one thread: on a shared machine, two threads wait on each other
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=4096, hidden_size=p.hidden_size, num_hidden_layers=p.num_layers,
                                         intermediate_size=p.intermediate_size, num_attention_heads=p.num_heads,
                                         num_key_value_heads=p.num_kv_heads, max_position_embeddings=p.max_positions,
                                         tie_word_embeddings=True, attn_implementation="sdpa"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(4096, (batch, seq_len))

    def train_step():
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def forward():
        with torch.no_grad():
            model(input_ids=ids)

    def timed(fn) -> float:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    load_before = os.getloadavg()[0]
    step_s, forward_s = timed(train_step), timed(forward)
    matmul_params = sum(t.numel() for m in model.modules() if not isinstance(m, torch.nn.Embedding)
                        for t in m.parameters(recurse=False))
    peak = efficiency.matmul_peak(threads=threads, sizes=(512, 1024), repeats=3)
    tokens_per_s = batch * seq_len / step_s
    return {
        "model": "small preset (Llama: hidden 256, 6 layers, vocab 4096), fp32, AdamW, random tokens",
        "params": sum(t.numel() for t in model.parameters()), "matmul_params": matmul_params,
        "tokens_per_step": batch * seq_len, "step_s": step_s, "forward_s": forward_s,
        "tokens_per_s": tokens_per_s, "seconds_per_token": 1 / tokens_per_s,
        "train_over_forward": step_s / forward_s,
        "achieved_gflops": 6 * matmul_params * tokens_per_s / 1e9,
        "fp32_peak_gflops": peak["fp32_gflops"],
        "fraction_of_fp32_peak": 6 * matmul_params * tokens_per_s / 1e9 / peak["fp32_gflops"],
        "load_average": [load_before, os.getloadavg()[0]], "threads": torch.get_num_threads(),
        "machine": machine_facts(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
