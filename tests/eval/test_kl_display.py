"""The KL people read (the `rlhf eval` table, the demo's report) is never negative, and the sampled
k1 figure, which can be, is kept beside it and named."""

import pytest
import torch

from rlhf.eval.policy import format_report, sequence_kl
from rlhf.models.load import load_causal_lm, load_tokenizer
from rlhf.rollout.generate import SamplingConfig, generate, stop_token_ids

PROMPTS = ["Once upon a time", "The dog", "Tom had a red ball.", "Sue liked"]


def test_kl_of_a_case_with_negative_k1_is_shown_non_negative(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    reference = load_causal_lm(tiny_model_dir).eval()
    policy = load_causal_lm(tiny_model_dir).eval()
    with torch.no_grad():
        policy.lm_head.weight.mul_(0.5)  # flatter next-token distributions than the reference's
    # The reference's greedy tokens: the reference gives each a higher probability than the flatter
    # policy does, so every k1 term log pi - log pi_ref is negative (a sample where k1 misleads).
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    rollout = generate(reference, ids, SamplingConfig(max_new_tokens=6, temperature=0), stop_token_ids(tok, reference),
                       tok.pad_token_id)
    exact, k1 = sequence_kl(policy, reference, rollout)
    assert (k1 < 0).all() and k1.mean() < 0
    assert (exact > 0).all()

    report = {"win_rate": 0.5, "ci_low": 0.4, "ci_high": 0.6, "wins": 1, "ties": 2, "losses": 1, "n": 4,
              "kl_to_reference": float(exact.mean()), "kl_to_reference_k1": float(k1.mean()), "policy_score": 0.0,
              "reference_score": 0.0, "scores": {}, "samples": [],
              "lengths": {side: {"mean": 1.0, "median": 1.0, "p10": 1.0, "p90": 1.0, "ended": 1.0}
                          for side in ("policy", "reference")}}
    kl_line = next(line for line in format_report(report, "judge").splitlines() if line.startswith("KL to reference"))
    shown = float(kl_line.split()[3])
    assert shown == pytest.approx(float(exact.mean()), abs=1e-3) and shown > 0
    assert "never negative" in kl_line and f"{float(k1.mean()):.3f}" in kl_line


def test_dpo_sampled_kl_reports_the_exact_kl_and_keeps_k1(tiny_model_dir):
    import contextlib

    from rlhf.train.preference_lm import sampled_kl

    tok = load_tokenizer(tiny_model_dir)
    reference = load_causal_lm(tiny_model_dir).eval()
    policy = load_causal_lm(tiny_model_dir).eval()
    with torch.no_grad():
        policy.lm_head.weight.mul_(0.5)
    out = sampled_kl(policy, lambda: contextlib.nullcontext(reference), tok, PROMPTS, SamplingConfig(max_new_tokens=5),
                     seed=0, batch_size=2, device=torch.device("cpu"), autocast=contextlib.nullcontext)
    assert out["kl"] > 0 and "kl_k1" in out and 1 <= out["response_length"] <= 5
