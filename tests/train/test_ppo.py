"""`rlhf ppo` on the tiny model: each algorithm runs, learns something, honours the run directory
contract and resumes exactly; the critic starts from the reward model; pieces of the update."""

import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from rlhf.config import PPOConfig
from rlhf.train import ppo
from rlhf.algos import last_token_reward
from rlhf.train.ppo_update import ALGORITHMS, Experience, advantages_of

GOLD = "rlhf.demo.oracle:gold_reward"
RULE = "ppo_test_rewards:letter_e"  # a rule reward that varies even on the tiny model's gibberish
RULE_SOURCE = """
def letter_e(prompts, responses):
    return [r.count("e") / 5 for r in responses]
"""


@pytest.fixture(autouse=True)
def rule_reward_module(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.getbasetemp() / "rule-reward"
    root.mkdir(exist_ok=True)
    (root / "ppo_test_rewards.py").write_text(RULE_SOURCE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(root))
PROMPTS = ["Once upon a time", "The dog was", "Tom had a red ball.", "Sue liked", "The cat", "One day, Lily",
           "Ben and Mia", "The sun"]


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS), encoding="utf-8")
    return path


def config(model, prompts, out, **overrides):
    base = dict(model=str(model), data=str(prompts), out=str(out), reward=RULE, max_steps=3, batch_size=4,
                minibatch_size=4, max_new_tokens=8, max_length=64, lr=1e-3, critic_lr=1e-3, precision="fp32",
                save_every=0, progress=False, samples_every=2, seed=1)
    return PPOConfig(**{**base, **overrides})


def weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


@pytest.mark.parametrize("algo", ["ppo", "rloo", "grpo", "reinforce"])
def test_each_algorithm_trains_and_logs(algo, tiny_model_dir, prompts_file, tmp_path):
    out = tmp_path / algo
    cfg = config(tiny_model_dir, prompts_file, out, algo=algo, gold=GOLD, eval_data=str(prompts_file),
                 num_eval_prompts=4, save_every=2)
    model_dir = ppo.run(cfg)
    assert any(not torch.equal(a, b) for a, b in zip(weights(tiny_model_dir).values(), weights(model_dir).values()))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    required = {"step", "loss", "lr", "tokens_per_s", "elapsed_s", "reward", "reward_normalized", "gold", "kl",
                "kl_k1", "kl_k2", "kl_k3", "kl_coef", "entropy", "approx_kl", "response_length", "eos_rate"}
    if algo != "reinforce":
        required.add("clipfrac")
    if algo == "ppo":
        required |= {"value_loss", "explained_variance"}
    for line in lines:
        assert required <= set(line), required - set(line)
        assert math.isfinite(line["loss"]) and line["kl_k3"] >= 0 and line["kl_k2"] >= 0
        # old log-probs come from the training forward: the first ratio of each update is 1
        assert line["ratio_first"] == pytest.approx(1.0, abs=1e-5)
    assert lines[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # the policy starts at the reference
    assert any(line["reward"] != 0 for line in lines)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algo"] == algo and summary["samples_per_prompt"] == (4 if algo in ("rloo", "grpo") else 1)
    assert 0 <= summary["eval_win_rate"] <= 1 and math.isfinite(summary["eval_kl_to_reference"])
    assert {"wall_s", "tokens_per_s", "peak_memory_mb"} <= set(summary)
    assert (out / "config.yaml").exists() and (out / "model" / "tokenizer.json").exists()
    assert (out / "checkpoints" / "step-2" / "state.pt").exists()
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 2} and all(isinstance(s["response"], str) for s in samples)
    assert len((out / "eval_samples.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize("algo", ["ppo", "rloo", "grpo", "reinforce"])
def test_resume_replays_the_same_steps(algo, tiny_model_dir, prompts_file, tmp_path):
    """Resuming from step 2 of 4 ends with the weights of the uninterrupted run: the sampling
    generator, the adaptive KL coefficient, optimisers and data position are all restored."""
    out = tmp_path / "run"
    cfg = config(tiny_model_dir, prompts_file, out, algo=algo, max_steps=4, save_every=2, kl_target=0.01,
                 kl_horizon=10, samples_every=0)
    straight = weights(ppo.run(cfg))
    lines = (out / "metrics.jsonl").read_text().splitlines()
    state = torch.load(out / "checkpoints" / "step-2" / "state.pt", weights_only=False)
    assert state["kl_controller"]["value"] != cfg.kl_coef  # the adaptive state moved and is saved
    resumed = weights(ppo.run(dataclasses.replace(cfg, resume=True)))
    for name in straight:
        assert_close(resumed[name], straight[name], rtol=0, atol=1e-6)
    timing = {"tokens_per_s", "samples_per_s", "elapsed_s", "rollout_s", "update_s"}
    replayed = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in json.loads(line).items() if k not in timing} for line in lines] == \
        [{k: v for k, v in line.items() if k not in timing} for line in replayed]


def test_critic_starts_at_the_normalised_reward_model_score(reward_model_dir, tiny_model_dir):
    from rlhf.models.load import load_tokenizer
    from rlhf.models.reward import load_reward_model
    from rlhf.train.critic import build_critic

    tokenizer = load_tokenizer(tiny_model_dir)
    rm = load_reward_model(reward_model_dir)
    critic = build_critic(reward_model_dir, tokenizer)
    prompts, responses = ["Once upon a time", "The dog"], [" there was a cat.", " ran home"]
    expected = rm.score(prompts, responses, normalize=True)
    for prompt, response, value in zip(prompts, responses, expected):
        ids = torch.tensor([rm.tokenize(prompt, response).input_ids])
        mask = torch.ones_like(ids)
        with torch.no_grad():
            values = critic(ids, mask, torch.arange(ids.shape[1])[None])
        # the value at the last token is the reward model's score, normalised with its stored statistics
        assert_close(values[0, -1], value, rtol=0, atol=1e-4)


def test_ppo_with_a_reward_model_directory(reward_model_dir, tiny_model_dir, prompts_file, tmp_path):
    out = tmp_path / "rm-run"
    ppo.run(config(tiny_model_dir, prompts_file, out, reward=str(reward_model_dir), max_steps=2, gold=GOLD))
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    # normalised reward = (raw - 0.3) / 2 before clipping
    assert first["reward_normalized"] == pytest.approx((first["reward"] - 0.3) / 2, abs=1e-5)
    assert "explained_variance" in first


def test_config_validation():
    with pytest.raises(ValueError, match="num_samples"):
        PPOConfig(algo="rloo", num_samples=1)
    with pytest.raises(ValueError, match="kl_in"):
        PPOConfig(algo="ppo", kl_in="loss")
    with pytest.raises(ValueError, match="critic"):
        PPOConfig(algo="grpo", critic="x")
    opts = ppo.resolve_options(PPOConfig(algo="grpo"))
    assert (opts.k, opts.kl_in_reward, opts.kl_estimator) == (4, False, "k3")
    assert ppo.resolve_options(PPOConfig(algo="ppo")).epochs == 4
    assert {"ppo", "rloo", "grpo", "reinforce"} <= set(ALGORITHMS)  # the rest: tests/train/test_ppo_variants.py


def _experience(score, mask, values=None):
    from rlhf.data.records import Rollout

    b, t = mask.shape
    rollout = Rollout(torch.ones(b, 1, dtype=torch.long), torch.ones(b, 1, dtype=torch.long),
                      torch.ones(b, t, dtype=torch.long), mask, torch.zeros(b, t), mask.sum(1) < t)
    zeros = torch.zeros(b, t)
    return Experience(rollout, zeros, zeros, values, score, zeros)


def test_last_token_reward_and_ppo_rewards_hand():
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert_close(last_token_reward(torch.tensor([2.0, -1.0]), mask), torch.tensor([[0, 0, 2.0], [-1.0, 0, 0]]))
    # row 0: kl = 0.5 per token, beta 0.1, score 2, V = 0, gamma = lam = 1:
    # rewards [-0.05, -0.05, 1.95] -> A = returns = [1.85, 1.9, 1.95]
    opts = ppo.Options(k=1, epochs=1, minibatch_size=2, grad_accum=1, kl_in_reward=True, kl_estimator="k1",
                       advantage="gae", policy_loss="clipped", clip=0.2, value_clip=0.2, gamma=1.0, lam=1.0, whiten_advantages=False,
                       grpo_scale_by_std=True, temperature=1.0, max_grad_norm=1.0)
    exp = _experience(torch.tensor([2.0, -1.0]), mask, values=torch.zeros(2, 3))
    adv, ret = advantages_of(exp, torch.full((2, 3), 0.5), 0.1, opts)
    assert_close(adv[0], torch.tensor([1.85, 1.9, 1.95]))
    assert_close(ret, adv)
    assert_close(adv[1], torch.tensor([-1.05, 0.0, 0.0]))


def test_rloo_advantages_with_kl_in_the_reward():
    # scores [1, 3], k=2; summed KL [0, 10] at beta 0.1 -> rewards [1, 2]: advantages [-1, 1] on every token
    mask = torch.tensor([[1, 1], [1, 0]])
    opts = dataclasses.replace(ppo.resolve_options(PPOConfig(algo="rloo", num_samples=2)), k=2)
    exp = _experience(torch.tensor([1.0, 3.0]), mask)
    kl = torch.tensor([[0.0, 0.0], [10.0, 99.0]])  # the padded 99 must not count
    adv, ret = advantages_of(exp, kl, 0.1, opts)
    assert ret is None
    assert_close(adv, torch.tensor([[-1.0, -1.0], [1.0, 0.0]]))


def test_lora_policy_uses_its_disabled_adapter_as_reference(tiny_model_dir, prompts_file, tmp_path):
    out = tmp_path / "lora"
    cfg = config(tiny_model_dir, prompts_file, out, algo="grpo", lora_r=4, max_steps=2, lr=1e-2)
    assert ppo.build_reference(cfg, torch.device("cpu")) is None
    model_dir = ppo.run(cfg)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["kl"] == pytest.approx(0.0, abs=1e-6) and lines[1]["kl_k3"] > 0  # the adapter moved away
    after = weights(model_dir)  # adapters merged: a plain model with the base model's tensor names
    assert after.keys() == weights(tiny_model_dir).keys()
    assert any(not torch.equal(after[k], v) for k, v in weights(tiny_model_dir).items())


def test_eval_every_merges_into_the_step_record(tiny_model_dir, prompts_file, tmp_path):
    out = tmp_path / "eval-every"
    ppo.run(config(tiny_model_dir, prompts_file, out, algo="rloo", eval_data=str(prompts_file), eval_every=1,
                   num_eval_prompts=2, max_steps=2))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    assert "eval_win_rate" in lines[0] and "loss" in lines[0]


def test_rloo_single_forward_update_equals_a_separate_pi_old_pass(tiny_model_dir, prompts_file, tmp_path):
    """With one optimiser step over one micro-batch, RLOO takes log pi_old (for the KL in its
    reward) from the update's own forward; split into two micro-batches it needs the separate
    rollout-phase forward. Both must give the same step."""
    common = dict(algo="rloo", max_steps=2, minibatch_size=16, kl_coef=0.5)
    one = ppo.run(config(tiny_model_dir, prompts_file, tmp_path / "one", **common))
    assert ppo.single_forward_update(config(tiny_model_dir, prompts_file, tmp_path, **common),
                                     ppo.resolve_options(config(tiny_model_dir, prompts_file, tmp_path, **common)))
    two = ppo.run(config(tiny_model_dir, prompts_file, tmp_path / "two", grad_accum=2, **common))
    for name, value in weights(one).items():
        assert_close(weights(two)[name], value, rtol=0, atol=2e-5)
    logged = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
              for run in ("one", "two")]
    for a, b in zip(*logged):
        assert a["kl"] == pytest.approx(b["kl"], abs=1e-5) and a["reward"] == pytest.approx(b["reward"], abs=1e-6)
