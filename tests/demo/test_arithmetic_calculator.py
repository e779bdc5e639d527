"""The multi-turn calculator example trains with the update of `rlhf ppo`: weights move, the
loss is finite, minibatches keep the environment's tokens in the attention mask, and the SFT
examples show the tool's format."""

from __future__ import annotations

import json
import math

import torch

from rlhf.config import PPOConfig
from rlhf.demo.calculator import MultiTurnExperience, tool_demonstrations, train
from rlhf.models.load import load_causal_lm
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
    exp = MultiTurnExperience(record, zeros, zeros, None, record.reward, zeros)
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
