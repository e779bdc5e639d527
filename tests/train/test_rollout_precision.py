"""`--rollout-precision`: the sampler's compute apart from the trainer's. bf16 rollouts beside fp32
training open a log-prob gap between the sampler and the trainer (what --tis-cap corrects), and
the run's summary says what the sampler really computed in (fp32 where bf16 is not native)."""

import json

import pytest
import torch

from rlhf.config import PPOConfig
from rlhf.rollout.kv_sampler import rollout_precision
from rlhf.runtime import bf16_supported
from rlhf.train import ppo

RULE_SOURCE = """
def letter_e(prompts, responses):
    return [r.count("e") / 5 for r in responses]
"""
PROMPTS = ["Once upon a time", "The dog was", "Tom had a red ball.", "Sue liked"]
NATIVE_BF16 = bf16_supported(torch.device("cpu"))


@pytest.fixture
def rule_dir(tmp_path, monkeypatch):
    (tmp_path / "precision_rewards.py").write_text(RULE_SOURCE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS), encoding="utf-8")
    return path


def run(model, prompts, out, **overrides):
    """One GRPO step: its samples come from the weights it trains, so the log-prob gap between the
    sampler and the trainer is the numerics' alone."""
    cfg = PPOConfig(model=str(model), data=str(prompts), out=str(out), reward="precision_rewards:letter_e",
                    algo="grpo", max_steps=1, batch_size=4, minibatch_size=8, max_new_tokens=12, max_length=64,
                    precision="fp32", save_every=0, progress=False, samples_every=0, seed=3, **overrides)
    ppo.run(cfg)
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    return line, json.loads((out / "summary.json").read_text())


def test_auto_follows_the_trainer_in_the_built_in_sampler_and_is_fp32_in_an_engine():
    assert rollout_precision(PPOConfig(precision="bf16"), engine="rlhf") == "bf16"
    assert rollout_precision(PPOConfig(precision="fp32"), engine="rlhf") == "fp32"
    assert rollout_precision(PPOConfig(precision="bf16"), engine="vllm") == "fp32"
    assert rollout_precision(PPOConfig(precision="fp32", rollout_precision="bf16"), engine="vllm") == "bf16"


def test_bf16_rollouts_beside_fp32_training_open_the_gap_tis_sees(tiny_model_dir, prompts_file, rule_dir, tmp_path):
    same, same_summary = run(tiny_model_dir, prompts_file, tmp_path / "fp32")
    mixed, mixed_summary = run(tiny_model_dir, prompts_file, tmp_path / "bf16", rollout_precision="bf16")
    assert same_summary["rollout_precision"] == "fp32" and same["logprob_gap"] < 1e-5  # two fp32 kernels
    for line in (same, mixed):
        assert 0 <= line["tis/capped_share"] <= 1 and line["tis/gap_max"] >= line["logprob_gap"]
    if NATIVE_BF16:
        # the bf16 decode's log-probs of its own tokens against the fp32 trainer's: bf16's 8-bit
        # mantissa (measured on the tiny model: mean 5.6e-4, max 2.9e-3 per token, against 2e-7 in fp32)
        assert mixed_summary["rollout_precision"] == "bf16"
        assert 1e-4 < mixed["logprob_gap"] < 0.1 and mixed["logprob_gap"] > 100 * same["logprob_gap"]
        assert mixed["tis/gap_max"] > 1e-3
    else:  # no avx512_bf16 / amx_bf16: bf16 would be emulated, so the sampler stays in fp32, and says so
        assert mixed_summary["rollout_precision"] == "fp32" and mixed["logprob_gap"] < 1e-5
