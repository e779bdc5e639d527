"""The multi-turn calculator example trains with the update of `rlhf ppo`: weights move, the
loss is finite, minibatches keep the environment's tokens in the attention mask, and the SFT
examples show the tool's format."""

from __future__ import annotations

import dataclasses
import json
import math

import torch

from rlhf.config import PPOConfig
from rlhf.demo.calculator import tool_demonstrations, train
from rlhf.models.load import load_causal_lm
from rlhf.rollout.experience import Experience
from rlhf.rollout.envs import CALL, CalculatorEnv, Turn
from rlhf.rollout.generate import SamplingConfig
from rlhf.rollout.multiturn import rollout


def test_tool_demonstrations_call_the_calculator_and_copy_its_result():
    rows = tool_demonstrations(6, seed=0)
    with_tool = [r for r in rows if CALL.search(r["completion"])]
    assert len(with_tool) == 3
    env = CalculatorEnv()
    for row in with_tool:
        call = row["completion"].split("</calc>")[0] + "</calc>"
        observation, _ = env([Turn("prompt", row["prompt"]), Turn("policy", call)])
        answer = row["completion"][len(call) + len(observation):]
        assert row["completion"] == call + observation + answer
        assert env([Turn("prompt", row["prompt"]), Turn("policy", call), Turn("env", observation),
                    Turn("policy", answer)]) == (None, 1.0)


def test_minibatches_keep_the_attention_over_environment_tokens(tiny_model_dir):
    from rlhf.models.load import load_tokenizer

    model, tok = load_causal_lm(str(tiny_model_dir)).eval(), load_tokenizer(str(tiny_model_dir))
    answer = lambda history: ("<result>1</result>", 0.0) if len(history) == 2 else (None, 1.0)  # noqa: E731
    record = rollout(model, tok, ["3*4=", "2*5=", "7*7="], answer, SamplingConfig(4), max_turns=2,
                     generator=torch.Generator().manual_seed(0))
    zeros = torch.zeros(record.response_mask.shape)
    exp = Experience(record, zeros, zeros, None, record.reward, zeros)
    part = exp.rows(torch.tensor([2, 0]))
    assert torch.equal(part.rollout.attention_mask, record.attention_mask[[2, 0]])
    assert not torch.equal(part.rollout.attention_mask[:, record.prompt_ids.shape[1]:], part.mask)
    assert [h[0].text for h in part.rollout.histories] == ["7*7=", "3*4="]


class LengthRewardedCalculator(CalculatorEnv):
    """The calculator, but an answer's reward is the parity of its length: the tiny untrained model
    is never right, and GRPO learns nothing from rewards that are all equal."""

    def __call__(self, history):
        observation, _ = super().__call__(history)
        return observation, float(observation is None and len(history[-1].text) % 2 == 1)


def test_the_calculator_example_trains(tiny_model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"{a}*{b}="}) + "\n" for a, b in [(3, 4), (2, 5), (6, 7), (8, 9)]))
    cfg = PPOConfig(model=str(tiny_model_dir), data=str(prompts), out=str(tmp_path / "rl"), algo="grpo", num_samples=2,
                    batch_size=2, minibatch_size=4, lr=1e-3, max_steps=2, max_new_tokens=4, max_length=48,
                    save_every=0, progress=False, samples_every=1, kl_coef=0.1)
    before = {k: v.clone() for k, v in load_causal_lm(str(tiny_model_dir)).state_dict().items()}
    model_dir = train(cfg, LengthRewardedCalculator(), max_turns=2)
    after = load_causal_lm(str(model_dir)).state_dict()
    assert any(not torch.equal(before[k], after[k].to(before[k].dtype)) for k in before)
    rows = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert math.isfinite(row["loss"]) and 0 <= row["reward"] <= 1 and 0 <= row["tool_call_rate"] <= 1
        assert row["turns"] >= 1
    summary = json.loads((tmp_path / "rl" / "summary.json").read_text())
    assert summary["environment"] == "LengthRewardedCalculator" and summary["steps"] == 2
    samples = [json.loads(line) for line in (tmp_path / "rl" / "samples.jsonl").read_text().splitlines()]
    assert samples and samples[0]["turns"][0]["role"] == "prompt"


def test_the_example_refuses_what_it_does_not_do(tmp_path):
    import pytest

    for algo, match in (("dapo", "dynamic sampling"), ("ppo", "critic-free")):
        cfg = PPOConfig(model="unused", data="unused", out=str(tmp_path / algo), algo=algo)
        with pytest.raises(ValueError, match=match):
            train(cfg)
        assert not (tmp_path / algo).exists()  # refused before anything is written


def calculator_config(model_dir, tmp_path, out: str = "rl", **overrides) -> PPOConfig:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"{a}*{b}=", "answer": str(a * b)}) + "\n"
                               for a, b in [(3, 4), (2, 5), (6, 7), (8, 9)]))
    base = dict(model=str(model_dir), data=str(prompts), out=str(tmp_path / out), algo="grpo", num_samples=2,
                batch_size=2, minibatch_size=4, lr=1e-3, max_steps=2, max_new_tokens=4, max_length=48, save_every=0,
                progress=False, samples_every=1, kl_coef=0.1, precision="fp32")
    return PPOConfig(**{**base, **overrides})


def test_ppo_run_trains_on_the_multi_turn_sampler_and_writes_the_run_directory(tiny_model_dir, tmp_path):
    """The trainer of `rlhf ppo`, unchanged, with the calculator's episodes behind its sampler seam."""
    from transformers import AutoModelForCausalLM

    from rlhf.demo.calculator import tool_sampler
    from rlhf.train import ppo

    cfg = calculator_config(tiny_model_dir, tmp_path)
    before = {k: v.clone() for k, v in load_causal_lm(str(tiny_model_dir)).state_dict().items()}
    model_dir = ppo.run(cfg, sampler=tool_sampler(cfg, LengthRewardedCalculator(), max_turns=2))
    out = tmp_path / "rl"
    assert model_dir == out / "model"
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "model/config.json", "model/model.safetensors"):
        assert (out / name).is_file(), name
    after = AutoModelForCausalLM.from_pretrained(str(model_dir)).state_dict()  # transformers alone loads it
    assert any(not torch.equal(before[k], after[k].to(before[k].dtype)) for k in before)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert math.isfinite(row["loss"]) and math.isfinite(row["kl_k3"]) and row["tokens_per_s"] > 0
        assert {"reward", "tool_call_rate", "turns", "episodes_ended", "elapsed_s", "lr"} <= row.keys()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stage"] == "ppo" and summary["sampler"] == "multi-turn" and summary["steps"] == 2
    assert summary["environment"] == "LengthRewardedCalculator" and summary["max_turns"] == 2
    assert summary["generated_tokens"] > 0 and "wall_s" in summary


def test_a_multi_turn_run_resumes_to_the_weights_of_an_uninterrupted_one(tiny_model_dir, tmp_path):
    """Each step's episodes are seeded by the step: a run that dies after its step-1 checkpoint and
    is resumed samples and trains what the straight run does."""
    import pytest
    from safetensors.torch import load_file

    from rlhf.demo.calculator import tool_sampler
    from rlhf.train import ppo

    env = LengthRewardedCalculator()
    straight = calculator_config(tiny_model_dir, tmp_path, "straight", max_steps=3, save_every=1)
    ppo.run(straight, sampler=tool_sampler(straight, env, max_turns=2))
    cut = calculator_config(tiny_model_dir, tmp_path, "cut", max_steps=3, save_every=1)
    dying = tool_sampler(cut, env, max_turns=2)
    sample = dying.sample
    dying.sample = lambda policy, prompts, step: sample(policy, prompts, step) if step < 1 else 1 / 0
    with pytest.raises(ZeroDivisionError):
        ppo.run(cut, sampler=dying)
    assert [p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()] == ["step-1"]
    resumed = dataclasses.replace(cut, resume=True)
    ppo.run(resumed, sampler=tool_sampler(resumed, env, max_turns=2))
    a, b = (load_file(str(tmp_path / name / "model" / "model.safetensors")) for name in ("straight", "cut"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6)
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_ppo_run_refuses_a_sampler_with_another_group_size(tiny_model_dir, tmp_path):
    import pytest

    from rlhf.demo.calculator import tool_sampler
    from rlhf.train import ppo

    cfg = calculator_config(tiny_model_dir, tmp_path)
    with pytest.raises(ValueError, match="samples per prompt"):
        ppo.run(dataclasses.replace(cfg, num_samples=4), sampler=tool_sampler(cfg))
    assert not (tmp_path / "rl").exists()
