"""Each stage on the tiny model: finite loss, changed weights, the run directory contract."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from rlhf.config import PretrainConfig, SFTConfig
from rlhf.train import pretrain, sft

from pathlib import Path

HH_TRAIN = Path(__file__).resolve().parents[1] / "assets" / "hh-rlhf" / "harmless-train-sample.jsonl.gz"  # tests/assets/README.md


def weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def check_run_dir(out):
    assert (out / "config.yaml").exists()
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines and all({"step", "loss", "lr", "tokens_per_s", "elapsed_s"} <= set(l) for l in lines)
    assert all(math.isfinite(l["loss"]) for l in lines)
    summary = json.loads((out / "summary.json").read_text())
    assert {"wall_s", "tokens_per_s", "peak_memory_mb", "precision"} <= set(summary)
    assert summary["processes"] == 1 and summary["wall_s"] > 0  # every stage's summary counts its processes
    assert (out / "model" / "model.safetensors").exists() and (out / "model" / "tokenizer.json").exists()
    return lines, summary


def changed(before, after):
    return any(not torch.equal(before[k], after[k]) for k in before)


def test_pretrain_builds_the_default_and_measures_perplexity(tiny_model_dir):
    out = tiny_model_dir.parent
    lines, summary = check_run_dir(out)
    assert math.isfinite(summary["eval_perplexity"]) and summary["eval_perplexity"] > 1
    assert summary["eval_bits_per_byte"] > 0
    assert (out / "samples.md").read_text().count("**") >= 2


def test_pretrain_continues_an_existing_model(tiny_model_dir, tmp_path, demonstrations_file):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": "the cat sat on the mat and was happy " * 4}) + "\n" for _ in range(30)))
    cfg = PretrainConfig(model=str(tiny_model_dir), data=str(corpus), out=str(tmp_path / "run"), max_steps=3,
                         batch_size=2, max_length=16, compile=False, progress=False, num_samples=1, save_every=0)
    out = pretrain.run(cfg)
    assert changed(weights(tiny_model_dir), weights(out))
    check_run_dir(tmp_path / "run")


@pytest.mark.parametrize("packing", [False, True])
def test_sft_on_prompt_completion_rows(tiny_model_dir, demonstrations_file, tmp_path, packing):
    cfg = SFTConfig(model=str(tiny_model_dir), data=str(demonstrations_file), eval_data=str(demonstrations_file),
                    out=str(tmp_path / "sft"), max_steps=4, batch_size=4, max_length=32, progress=False,
                    packing=packing, log_every=1, lr=1e-3)
    out = sft.run(cfg)
    lines, summary = check_run_dir(tmp_path / "sft")
    assert changed(weights(tiny_model_dir), weights(out))
    assert lines[-1]["loss"] < lines[0]["loss"]  # four steps on one repeated answer must make progress
    assert math.isfinite(summary["eval_loss"])


def test_sft_with_lora_saves_a_merged_model(tiny_model_dir, demonstrations_file, tmp_path):
    cfg = SFTConfig(model=str(tiny_model_dir), data=str(demonstrations_file), out=str(tmp_path / "lora"),
                    max_steps=3, batch_size=4, max_length=32, progress=False, lora_r=4, lr=1e-2)
    out = sft.run(cfg)
    after = weights(out)
    assert not any("lora" in k for k in after)
    assert changed(weights(tiny_model_dir), after)


def test_sft_on_hh_chosen_transcripts(tiny_model_dir, tmp_path):
    import gzip

    subset = tmp_path / "hh.jsonl"
    with gzip.open(HH_TRAIN, "rt", encoding="utf-8") as f:
        subset.write_text("".join(next(f) for _ in range(16)), encoding="utf-8")
    cfg = SFTConfig(model=str(tiny_model_dir), data=str(subset), out=str(tmp_path / "hh"), max_steps=2,
                    batch_size=4, max_length=64, progress=False)
    out = sft.run(cfg)
    assert changed(weights(tiny_model_dir), weights(out))
    assert json.loads((tmp_path / "hh" / "summary.json").read_text())["examples"] == 16


def test_sft_loss_ignores_prompt_tokens(tiny_model_dir):
    """Changing prompt tokens' targets cannot change the loss: only completion positions count."""
    from rlhf.data.tokenize import tokenize_completion
    from rlhf.models.load import load_causal_lm, load_tokenizer
    from rlhf.models.lm import lm_loss_sum
    from rlhf.train.sft import make_batch

    tok, model = load_tokenizer(tiny_model_dir), load_causal_lm(tiny_model_dir)
    ex = tokenize_completion(tok, "Once upon a time there", " was a dog.", 32)
    batch = make_batch([ex], tok.pad_token_id)
    loss, _ = lm_loss_sum(model, batch)
    # Recompute by hand over completion targets only.
    logits = model(input_ids=batch["input_ids"]).logits.log_softmax(-1)
    targets = [(t - 1, batch["input_ids"][0, t]) for t in range(1, batch["input_ids"].shape[1]) if batch["loss_mask"][0, t]]
    manual = -sum(logits[0, p, y] for p, y in targets)
    assert batch["n_units"] == len(targets) == len(ex.input_ids) - ex.prompt_len
    torch.testing.assert_close(loss, manual, rtol=1e-4, atol=1e-4)
