"""`rlhf dpo` on the tiny model: every loss trains, the pieces under it compute what they claim."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from rlhf.config import DPOConfig
from rlhf.train import direct_alignment, dpo

LOSS_NAMES = ["dpo", "cdpo", "ipo", "simpo", "orpo", "kto"]


@pytest.fixture(scope="module")
def comparisons_file(tmp_path_factory):
    happy = [" the dog was happy and played in the sun.", " they laughed and had a lovely day."]
    sad = [" the dog was sad and cried all day.", " it rained and the cat was angry."]
    rows = [{"prompt": f"Story {i}: Once upon a time", "chosen": happy[i % 2], "rejected": sad[(i // 2) % 2]}
            for i in range(16)]
    path = tmp_path_factory.mktemp("dpo-data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def config(model, data, out, **overrides):
    base = dict(model=str(model), data=str(data), out=str(out), max_steps=3, batch_size=4, max_length=32,
                lr=1e-3, warmup_steps=0, log_every=1, save_every=0, kl_prompts=0, progress=False)
    return DPOConfig(**{**base, **overrides})


def weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def changed(before, after):
    return any(not torch.equal(before[k], after[k]) for k in before)


def read_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_every_loss_trains_and_fills_the_run_directory(tiny_model_dir, comparisons_file, tmp_path, loss):
    out = tmp_path / loss
    model_dir = dpo.run(config(tiny_model_dir, comparisons_file, out, loss=loss))
    assert changed(weights(tiny_model_dir), weights(model_dir))
    assert (out / "config.yaml").exists() and (out / "model" / "tokenizer.json").exists()
    lines = read_metrics(out)
    assert len(lines) == 3 and all(math.isfinite(line["loss"]) for line in lines)
    assert all({"step", "loss", "lr", "tokens_per_s", "elapsed_s"} <= set(line) for line in lines)
    pairwise_stats = {"reward_chosen", "reward_rejected", "reward_accuracy", "reward_margin", "logp_chosen",
                      "logp_rejected"}
    expected = {"kl_reference_point", "reward_desirable", "reward_undesirable"} if loss == "kto" else pairwise_stats
    assert expected <= set(lines[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["loss_type"] == loss and summary["examples"] == (32 if loss == "kto" else 16)
    assert {"wall_s", "tokens_per_s", "peak_memory_mb", "reference_s"} <= set(summary)
    assert summary["processes"] == 1
    assert (out / direct_alignment.REFERENCE_CACHE).exists()


def test_first_step_is_log2_and_the_margin_grows(tiny_model_dir, comparisons_file, tmp_path):
    """Before the first update the policy is the reference: every pair's DPO loss is log 2."""
    out = tmp_path / "run"
    cfg = config(tiny_model_dir, comparisons_file, out, precision="fp32", max_steps=8, lr=3e-3, eval_data=str(comparisons_file))
    dpo.run(cfg)
    lines = read_metrics(out)
    assert lines[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert abs(lines[0]["reward_chosen"]) < 1e-5 and abs(lines[0]["reward_rejected"]) < 1e-5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_reward_margin"] > 0.05 and summary["eval_reward_accuracy"] == 1.0
    assert summary["eval_loss"] < math.log(2)


def test_concatenated_forward_matches_per_sequence_log_softmax(tiny_model_dir, comparisons_file):
    from rlhf.data.collate import collate_pairs
    from rlhf.data.tokenize import tokenize_pair
    from rlhf.models.load import load_causal_lm, load_tokenizer
    from rlhf.train.preference_lm import sequence_logps

    tok, model = load_tokenizer(tiny_model_dir), load_causal_lm(tiny_model_dir)
    pairs = [tokenize_pair(tok, "Once upon a time", " a cat sat.", " the sun was very hot today and", 32),
             tokenize_pair(tok, "Tom had a ball", " and he was glad.", " no.", 32)]
    batch = collate_pairs(pairs, tok.pad_token_id)
    logps, lengths = sequence_logps(model, batch)
    rows = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    for r, ex in enumerate(rows):
        logits = model(input_ids=torch.tensor([ex.input_ids])).logits[0].log_softmax(-1)
        manual = sum(logits[t - 1, ex.input_ids[t]] for t in range(ex.prompt_len, len(ex.input_ids)))
        torch.testing.assert_close(logps[r], manual, rtol=1e-5, atol=1e-4)
        assert lengths[r] == len(ex.input_ids) - ex.prompt_len


def test_pair_shares_prompt_tokens_under_truncation(tiny_model_dir):
    from rlhf.data.tokenize import tokenize_pair
    from rlhf.models.load import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    long_prompt = "Once upon a time there was a little cat who liked the sun " * 3
    pair = tokenize_pair(tok, long_prompt, " a dog.", " the cat and the dog played in the park all day long.", 24)
    assert pair.chosen.prompt_len == pair.rejected.prompt_len
    assert pair.chosen.input_ids[: pair.chosen.prompt_len] == pair.rejected.input_ids[: pair.rejected.prompt_len]
    assert len(pair.rejected.input_ids) == 24 and len(pair.chosen.input_ids) <= 24
    assert pair.chosen.input_ids[-1] == tok.eos_token_id  # the short one keeps its EOS
    assert sum(pair.chosen.loss_mask[: pair.chosen.prompt_len]) == 0


def test_kto_reads_comparisons_as_thumbs_and_pairs_other_prompts(comparisons_file):
    from rlhf.data.tokenize import mismatched_partners

    feedback = direct_alignment.read_feedback(str(comparisons_file), skip_bad_rows=False)
    assert len(feedback) == 32 and [f.label for f in feedback[:2]] == [True, False]
    prompts = [f.prompt for f in feedback]
    partner = mismatched_partners(prompts, seed=0)
    assert all(prompts[j] != prompts[i] for i, j in enumerate(partner))
    assert mismatched_partners(["a", "a"], seed=0) == [0, 1]  # nothing else to pair with


def test_cached_reference_logps_survive_resume(tiny_model_dir, comparisons_file, tmp_path, monkeypatch):
    """A resumed run reads the reference log-probs from the run directory and ends where an
    uninterrupted run ends; computing them again would fail here."""
    out = tmp_path / "run"
    cfg = config(tiny_model_dir, comparisons_file, out, precision="fp32", max_steps=4, save_every=2)
    straight = weights(dpo.run(cfg))
    cache = torch.load(out / direct_alignment.REFERENCE_CACHE, weights_only=True)
    assert cache["train"]["logps"].shape == (32,)

    def refuse(*args, **kwargs):
        raise AssertionError("reference log-probs recomputed on resume")

    monkeypatch.setattr(direct_alignment, "score_examples", refuse)
    resumed = weights(dpo.run(DPOConfig(**{**cfg.__dict__, "resume": True})))
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=1e-6)
    assert json.loads((out / "summary.json").read_text())["reference_cached"] is True
    assert [line["step"] for line in read_metrics(out)] == [1, 2, 3, 4]


def test_lora_reference_is_the_disabled_adapter_and_kl_is_measured(tiny_model_dir, comparisons_file, tmp_path):
    out = tmp_path / "lora"
    cfg = config(tiny_model_dir, comparisons_file, out, lora_r=4, lr=1e-2, precision="fp32", kl_prompts=3,
                 max_new_tokens=6)
    after = weights(dpo.run(cfg))
    assert not any("lora" in k for k in after) and changed(weights(tiny_model_dir), after)
    lines = read_metrics(out)
    assert lines[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert math.isfinite(summary["kl"]) and summary["kl"] != 0 and 1 <= summary["response_length"] <= 6


def test_sampled_kl_is_zero_when_policy_is_the_reference(tiny_model_dir):
    import contextlib

    from rlhf.models.load import load_causal_lm, load_tokenizer
    from rlhf.rollout.generate import SamplingConfig
    from rlhf.train.preference_lm import sampled_kl

    tok, model = load_tokenizer(tiny_model_dir), load_causal_lm(tiny_model_dir)
    out = sampled_kl(model, lambda: contextlib.nullcontext(model), tok, ["Once upon a time", "Tom had"],
                     SamplingConfig(max_new_tokens=5), seed=0, batch_size=2, device="cpu",
                     autocast=contextlib.nullcontext)
    assert out["kl"] == 0.0 and 1 <= out["response_length"] <= 5


def test_config_validates_per_loss_options():
    assert DPOConfig(loss="cdpo").loss_options == {"beta": 0.1, "label_smoothing": 0.1}
    assert DPOConfig(loss="simpo").loss_options == {"beta": 2.0, "gamma": 0.5}
    assert DPOConfig(loss="orpo").chosen_nll_weight == 1.0 and DPOConfig().chosen_nll_weight == 0.0
    assert DPOConfig(sft_weight=0.5).chosen_nll_weight == 0.5
    for bad in (dict(label_smoothing=0.1), dict(gamma=1.0), dict(loss="dpo", desirable_weight=2.0),
                dict(loss="cdpo", label_smoothing=0.5), dict(beta=0.0), dict(loss="kto", sft_weight=1.0),
                dict(online=True), dict(labeler="x:y")):
        with pytest.raises(ValueError):
            DPOConfig(**bad)


def test_cli_loss_options_reach_the_loss():  # --help's fields and defaults: tests/test_cli.py, for every command
    from rlhf.cli import parse

    assert parse("dpo", ["--loss", "simpo", "--gamma", "1.0"]).loss_options["gamma"] == 1.0
