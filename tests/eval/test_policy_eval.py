import json

import pytest
import torch

from rlhf.eval.metrics import pairwise_outcomes, win_rate
from rlhf.eval.policy import evaluate_policy
from rlhf.models.load import load_causal_lm, load_tokenizer
from rlhf.rollout.generate import SamplingConfig
from rlhf.rollout.scorers import Scorer

PROMPTS = ["Once upon a time", "The dog", "Tom had a red ball.", "Sue liked"]


def test_win_rate_counts_ties_half():
    # 2 wins, 1 tie, 1 loss: (1 + 1 + 0.5 + 0) / 4 = 0.625
    report = win_rate([1, 1, 0.5, 0])
    assert report["win_rate"] == 0.625 and (report["wins"], report["ties"], report["losses"]) == (2, 1, 1)
    # sample std of [1, 1, .5, 0] = sqrt(((.375^2)*2 + .125^2 + .625^2) / 3) = 0.4787; half width 1.96 * 0.4787 / 2
    assert report["win_rate"] - report["ci_low"] == pytest.approx(1.96 * 0.47871 / 2, abs=1e-4)
    assert report["ci_high"] == 1.0  # 0.625 + 0.469 is clipped to 1
    assert pairwise_outcomes([1.0, 0.2, 0.3], [0.5, 0.2, 0.9]) == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError):
        win_rate([])
    with pytest.raises(ValueError):
        win_rate([0.7])


def test_a_policy_against_itself_ties_with_zero_kl(tiny_model_dir):
    model, tok = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    judge = Scorer("length", lambda p, r: [len(x) for x in r])
    report = evaluate_policy(model, model, tok, PROMPTS, judge, SamplingConfig(max_new_tokens=6), seed=3)
    assert report["win_rate"] == 0.5 and report["ties"] == 4
    assert report["kl_to_reference"] == pytest.approx(0.0, abs=1e-6)
    assert len(report["samples"]) == 4 and report["samples"][0]["policy"] == report["samples"][0]["reference"]


def test_a_changed_policy_has_positive_kl(tiny_model_dir):
    model, tok = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    other = load_causal_lm(tiny_model_dir)
    with torch.no_grad():
        other.lm_head.weight.mul_(1.5)  # sharper next-token distributions
    judge = Scorer("length", lambda p, r: [len(x) for x in r])
    report = evaluate_policy(other, model, tok, PROMPTS * 4, judge, SamplingConfig(max_new_tokens=6), seed=0)
    assert report["kl_to_reference"] > 0.01
    assert report["n"] == 16 and 0 <= report["ci_low"] <= report["win_rate"] <= report["ci_high"] <= 1


def test_eval_policy_command(tiny_model_dir, tmp_path):
    from rlhf.cli import main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    out = tmp_path / "report.json"
    code = main(["eval", "policy", "--model", str(tiny_model_dir), "--reference", str(tiny_model_dir), "--data",
                 str(prompts), "--judge", "rlhf.demo.oracle:gold_reward", "--out", str(out),
                 "--max-new-tokens", "5", "--precision", "fp32"])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["n"] == 4 and report["win_rate"] == 0.5 and len(report["samples"]) == 4


def test_eval_command_reports_extra_scorers_and_length_statistics(tiny_model_dir, tmp_path, capsys):
    from rlhf.cli import main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    out = tmp_path / "report.json"
    code = main(["eval", "--model", str(tiny_model_dir), "--reference", str(tiny_model_dir), "--data", str(prompts),
                 "--judge", "rlhf.demo.oracle:gold_reward", "--scorers", "rlhf.demo.oracle:gold_reward",
                 "--out", str(out), "--max-new-tokens", "5", "--precision", "fp32"])
    assert code == 0
    report = json.loads(out.read_text())
    extra = report["scores"]["rlhf.demo.oracle:gold_reward"]
    # the same model, seed and prompts on both sides: the extra scorer agrees with the judge
    assert extra["policy"] == pytest.approx(report["policy_score"]) == pytest.approx(extra["reference"])
    lengths = report["lengths"]["policy"]
    assert 1 <= lengths["p10"] <= lengths["median"] <= lengths["p90"] <= 5 and 0 <= lengths["ended"] <= 1
    assert lengths["mean"] == pytest.approx(report["policy_length"])
    printed = capsys.readouterr().out
    assert "win rate                 0.500" in printed and "length median" in printed and "ended (EOS)" in printed


def test_long_prompts_fit_a_model_with_absolute_positions(tiny_model_dir, tmp_path):
    """GPT-2 has 64 positions here: a 300-token prompt must be cut from the left to leave room for
    the response (`--max-length`), not run past the position table into an IndexError."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf.cli import main

    tok = load_tokenizer(tiny_model_dir)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    gpt2.save_pretrained(tmp_path / "gpt2")
    tok.save_pretrained(tmp_path / "gpt2")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "The dog ran and ran. " * 60}) + "\n", encoding="utf-8")
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(tmp_path / "gpt2"), "--reference", str(tmp_path / "gpt2"), "--data",
                 str(prompts), "--judge", "rlhf.demo.oracle:gold_reward", "--max-length", "64", "--max-new-tokens",
                 "8", "--precision", "fp32", "--no-progress", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["kl_to_reference"] == pytest.approx(0.0, abs=1e-5)
