"""`evaluate_policy` reports the length-controlled win rate and each side's EOS share."""

import pytest
import torch

from rlhf.eval.policy import evaluate_policy
from rlhf.models.load import load_causal_lm, load_tokenizer
from rlhf.rollout.generate import SamplingConfig
from rlhf.rollout.scorers import Scorer

PROMPTS = ["Once upon a time", "The dog", "Tom had a red ball.", "Sue liked"]


def test_lc_win_rate_and_eos_share_in_the_report(tiny_model_dir):
    model, tok = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    judge = Scorer("length", lambda p, r: [len(x) for x in r])
    itself = evaluate_policy(model, model, tok, PROMPTS, judge, SamplingConfig(max_new_tokens=6), seed=3)
    # the same samples on both sides: all ties at equal length, so the length term has nothing to explain
    assert itself["lc_win_rate"] == pytest.approx(0.5) and itself["length_coef"] == 0.0

    # A policy that stops at once (its EOS logit pushed far up on the tiny model's hidden states),
    # against the reference, which mostly runs to max_new_tokens.
    stops = load_causal_lm(tiny_model_dir)
    with torch.no_grad():
        stops.lm_head.weight[tok.eos_token_id] -= 100.0
    report = evaluate_policy(stops, model, tok, PROMPTS * 4, judge, SamplingConfig(max_new_tokens=6), seed=0)
    assert report["policy_eos_share"] == 1.0
    assert report["reference_eos_share"] < 1.0
    assert report["reference_eos_share"] == pytest.approx(report["lengths"]["reference"]["ended"])
    assert 0 <= report["lc_ci_low"] <= report["lc_win_rate"] <= report["lc_ci_high"] <= 1
