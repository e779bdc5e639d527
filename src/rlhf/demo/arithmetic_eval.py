"""Held-out accuracy of a policy on the arithmetic task, and its KL to a reference.

For each held-out prompt the policy answers once greedily (pass@1, greedy) and `k` times at
temperature 1 (the sampled pass@1, the mean share of right samples, and the unbiased pass@k of
Chen et al. 2021). The KL to the reference is measured on those samples as in `rlhf eval
policy`: the exact KL of the two next-token distributions summed over each response
(`rlhf.eval.policy.sequence_kl`), averaged over responses, in nats.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch

from ..data.tokenize import encode_prompt
from ..eval.metrics import win_rate
from ..eval.policy import sample_in_batches, sequence_kl
from ..rollout.generate import SamplingConfig
from .arithmetic import is_correct, pass_at_k


def _answers(model, tokenizer, prompt_ids, sampling, generator, batch_size, autocast):
    """(texts, rollouts) of one response per row of `prompt_ids`, `batch_size` rows at a time."""
    rollouts, texts = sample_in_batches(model, tokenizer, prompt_ids, sampling, generator, batch_size, autocast)
    return texts, rollouts


@torch.no_grad()
def evaluate_accuracy(policy, reference, tokenizer, prompts: Sequence[str], k: int = 8, seed: int = 0,
                      max_new_tokens: int = 8, batch_size: int = 256,
                      autocast: Callable[[], contextlib.AbstractContextManager] | None = None) -> dict:
    """Accuracy of `policy` on `prompts` and KL(policy || reference); `reference` may be the policy itself.

    Returns greedy_accuracy with its normal-approximation 95% interval (greedy_ci_low, greedy_ci_high),
    sampled_accuracy (pass@1 at temperature 1 over k samples), pass_at_k, k, n (prompts),
    kl_to_ref (nats per response), response_length (mean sampled tokens) and samples (the first
    prompts with the greedy answer and whether it is right)."""
    if k < 1 or not prompts:
        raise ValueError(f"evaluate_accuracy needs k >= 1 and at least one prompt, got k={k}, {len(prompts)} prompts")
    autocast = autocast or contextlib.nullcontext
    device = next(policy.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    was_training = policy.training
    policy.eval()
    try:
        greedy, _ = _answers(policy, tokenizer, prompt_ids, SamplingConfig(max_new_tokens, temperature=0.0), generator,
                             batch_size, autocast)
        rows = [ids for ids in prompt_ids for _ in range(k)]
        sampled, rollouts = _answers(policy, tokenizer, rows, SamplingConfig(max_new_tokens, temperature=1.0),
                                     generator, batch_size, autocast)
        if reference is policy:
            kl = torch.zeros(len(rows))
        else:
            with autocast():
                kl = torch.cat([sequence_kl(policy, reference, r)[0] for r in rollouts])
    finally:
        policy.train(was_training)
    greedy_right = [is_correct(p, a) for p, a in zip(prompts, greedy)]
    right_per_prompt = [sum(is_correct(p, a) for a in sampled[i * k : (i + 1) * k]) for i, p in enumerate(prompts)]
    greedy_interval = win_rate([float(ok) for ok in greedy_right])  # mean of 0/1 outcomes, normal 95% interval
    length = float(torch.cat([r.response_mask.sum(1) for r in rollouts]).float().mean())
    return {
        "greedy_accuracy": greedy_interval["win_rate"], "greedy_ci_low": greedy_interval["ci_low"],
        "greedy_ci_high": greedy_interval["ci_high"],
        "sampled_accuracy": sum(right_per_prompt) / (k * len(prompts)),
        "pass_at_k": sum(pass_at_k(k, c, k) for c in right_per_prompt) / len(prompts), "k": k, "n": len(prompts),
        "kl_to_ref": float(kl.float().mean()),
        "response_length": length,
        "samples": [{"prompt": p, "greedy": a, "correct": ok, "sampled_right": c}
                    for p, a, ok, c in zip(prompts[:16], greedy, greedy_right, right_per_prompt)],
    }
