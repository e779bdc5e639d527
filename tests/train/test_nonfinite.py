"""NaN and inf never reach the weights: a bad step is skipped and counted, a run of them stops with
a clear error, and nothing non-finite is ever saved (rlhf.runtime.guard)."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from rlhf.config import PPOConfig, SFTConfig
from rlhf.rollout.scorers import Scorer
from rlhf.runtime import NonFiniteError, NonFiniteGuard, assert_finite, save_checkpoint
from rlhf.train import ppo, sft

NAN = float("nan")


def poisoned(loss_fn, bad_calls):
    """`loss_fn` whose loss (and so every gradient) is NaN on the calls numbered in `bad_calls`
    (0-based), or on every call when `bad_calls` is None."""
    calls = []

    def wrapped(*args, **kwargs):
        loss, stats = loss_fn(*args, **kwargs)
        if bad_calls is None or len(calls) in bad_calls:
            loss = loss * NAN
        calls.append(1)
        return loss, stats

    return wrapped


def all_finite(model_dir):
    return all(torch.isfinite(t).all() for t in load_file(str(model_dir / "model.safetensors")).values())


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def sft_config(model, data, out, **overrides):
    base = dict(model=str(model), data=str(data), out=str(out), max_steps=4, batch_size=4, max_length=32, lr=1e-3,
                precision="fp32", save_every=0, log_every=1, progress=False)
    return SFTConfig(**{**base, **overrides})


# ---------------------------------------------------------------- the guard itself


def test_guard_counts_skips_and_stops_after_max_bad_steps_in_a_row():
    guard = NonFiniteGuard(max_bad_steps=2)
    assert guard.check(1, loss=1.0, grad_norm=torch.tensor(0.5))
    assert not guard.check(2, loss=NAN, grad_norm=torch.tensor(0.5))
    assert guard.check(3, loss=1.0, reward=torch.tensor([1.0, 2.0]))  # a good step resets the run of bad ones
    assert not guard.check(4, loss=1.0, reward=torch.tensor([1.0, math.inf]))
    with pytest.raises(NonFiniteError, match=r"step 5: non-finite grad_norm=inf; 2 steps in a row.*--lr"):
        guard.check(5, loss=1.0, grad_norm=torch.tensor(math.inf))
    assert guard.skipped == 3 and guard.consecutive == 2
    assert isinstance(NonFiniteError("x"), ValueError)  # the CLI prints ValueErrors without a traceback


# ---------------------------------------------------------------- fit (sft on the tiny model)


def test_fit_skips_one_nan_step_and_counts_it(tiny_model_dir, demonstrations_file, tmp_path, monkeypatch):
    monkeypatch.setattr(sft, "lm_loss_sum", poisoned(sft.lm_loss_sum, bad_calls={1}))
    out = tmp_path / "sft"
    model_dir = sft.run(sft_config(tiny_model_dir, demonstrations_file, out))
    assert all_finite(model_dir)
    assert [m["skipped_steps"] for m in metrics(out)] == [0, 1, 1, 1]
    assert json.loads((out / "summary.json").read_text())["skipped_steps"] == 1


def test_skipped_steps_are_counted_across_a_resume(tiny_model_dir, demonstrations_file, tmp_path, monkeypatch):
    out = tmp_path / "sft"
    with monkeypatch.context() as patch:
        patch.setattr(sft, "lm_loss_sum", poisoned(sft.lm_loss_sum, bad_calls={1}))
        sft.run(sft_config(tiny_model_dir, demonstrations_file, out, save_every=2))
    # Resume from the step-2 checkpoint with a healthy loss: the skip before it still counts.
    sft.run(sft_config(tiny_model_dir, demonstrations_file, out, save_every=2, resume=True))
    assert [m["skipped_steps"] for m in metrics(out)] == [0, 1, 1, 1]
    assert json.loads((out / "summary.json").read_text())["skipped_steps"] == 1


def test_fit_stops_after_max_bad_steps_and_writes_no_model(tiny_model_dir, demonstrations_file, tmp_path,
                                                           monkeypatch):
    monkeypatch.setattr(sft, "lm_loss_sum", poisoned(sft.lm_loss_sum, bad_calls=None))
    out = tmp_path / "sft"
    with pytest.raises(NonFiniteError, match=r"step 3: non-finite loss=nan.*3 steps in a row"):
        sft.run(sft_config(tiny_model_dir, demonstrations_file, out, max_bad_steps=3, max_steps=6))
    assert not (out / "model").exists()


def test_max_bad_steps_is_validated():
    with pytest.raises(ValueError, match="max_bad_steps"):
        SFTConfig(max_bad_steps=0)


# ---------------------------------------------------------------- ppo


PROMPTS = ["Once upon a time", "The dog was", "Tom had a red ball.", "Sue liked"]


def nan_once_scorer(nan_call: int) -> Scorer:
    """A real rule scorer whose `nan_call`-th batch of scores (0-based) is NaN, as a reward model
    overflowing in bf16 would give; the Scorer's own checks see it."""
    calls = []

    def score(prompts, responses):
        calls.append(1)
        return [NAN if len(calls) - 1 == nan_call else len(r) / 10 for r in responses]

    return Scorer("nan-once", score)


def test_scorer_refuses_nan_outside_online_rl():
    with pytest.raises(ValueError, match="non-finite"):
        nan_once_scorer(0)(["p"], ["r"])


def ppo_config(model, tmp_path, **overrides):
    """The reward named here is a placeholder: the tests replace `ppo.load_scorer`."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS), encoding="utf-8")
    base = dict(model=str(model), data=str(prompts), out=str(tmp_path / "ppo"), reward="rlhf.demo.oracle:gold_reward",
                max_steps=3, batch_size=2, minibatch_size=4, num_samples=2, max_new_tokens=6, max_length=48, lr=1e-3,
                critic_lr=1e-3, precision="fp32", save_every=0, log_every=1, samples_every=0, progress=False, seed=1)
    return PPOConfig(**{**base, **overrides})


def test_ppo_skips_a_rollout_with_nan_rewards(tiny_model_dir, tmp_path, monkeypatch):
    scorer = nan_once_scorer(nan_call=1)
    monkeypatch.setattr(ppo, "load_scorer", lambda spec, device, precision, **options: scorer)
    model_dir = ppo.run(ppo_config(tiny_model_dir, tmp_path, algo="rloo"))
    assert all_finite(model_dir)
    lines = metrics(tmp_path / "ppo")
    assert [m["step"] for m in lines] == [1, 3]  # step 2 made no update, so it has no metrics line
    assert lines[-1]["skipped_rollouts"] == 1 and lines[-1]["skipped_steps"] == 0
    summary = json.loads((tmp_path / "ppo" / "summary.json").read_text())
    assert summary["skipped_rollouts"] == 1 and summary["skipped_steps"] == 0


def test_ppo_stops_when_every_update_is_nan(tiny_model_dir, tmp_path, monkeypatch):
    from rlhf.train import ppo_update

    monkeypatch.setattr(ppo_update, "policy_loss_of", poisoned(ppo_update.policy_loss_of, bad_calls=None))
    cfg = ppo_config(tiny_model_dir, tmp_path, algo="ppo", num_samples=1, update_epochs=2, max_bad_steps=3)
    stop = r"optimiser step 1 of step 2: non-finite policy_loss=nan.*3 optimiser steps in a row"
    with pytest.raises(NonFiniteError, match=stop):
        ppo.run(cfg)
    assert not (tmp_path / "ppo" / "model").exists()


# ---------------------------------------------------------------- saving


def test_save_pretrained_refuses_nan_weights(tiny_model_dir, tmp_path):
    from rlhf.models.load import load_causal_lm, load_tokenizer, save_pretrained

    model = load_causal_lm(tiny_model_dir)
    with torch.no_grad():
        model.get_input_embeddings().weight[3, 0] = NAN
    with pytest.raises(NonFiniteError, match="embed_tokens"):
        save_pretrained(model, load_tokenizer(tiny_model_dir), tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_save_checkpoint_refuses_nan_state(tmp_path):
    run = SimpleNamespace(path=tmp_path, checkpoints=tmp_path / "checkpoints", cfg=SFTConfig(out=str(tmp_path)))
    state = {"model": {"w": torch.ones(2, 2), "b": torch.tensor([0.0, math.inf])}, "optimizer": {}, "tokens": 3}
    with pytest.raises(NonFiniteError, match=r"checkpoint.*model\.b"):
        save_checkpoint(run, 1, state, keep=2)
    assert not any(run.checkpoints.glob("step-*"))


def test_assert_finite_walks_nested_states_and_ignores_integer_tensors():
    assert_finite({"a": [torch.zeros(2), (torch.tensor([1, 2]), 0.5)], "rng": torch.ByteTensor([255])}, "state")
    with pytest.raises(NonFiniteError, match=r"a\.1\.1"):
        assert_finite({"a": [torch.zeros(2), (torch.tensor([1, 2]), NAN)]}, "state")
