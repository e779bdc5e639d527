"""Multi-turn rollouts: environment tokens carry no gradient, the policy's ids are kept as sampled
(never decoded and re-encoded), and the calculator environment computes arithmetic and nothing else."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from rlhf.algos import kl_estimate, masked_mean, ppo_policy_loss, token_logprobs
from rlhf.models.load import load_causal_lm, load_tokenizer
from rlhf.rollout.envs import CalculatorEnv, CalculatorError, Turn, calculate
from rlhf.rollout.generate import SamplingConfig, generate, stop_token_ids
from rlhf.rollout.logprobs import response_logits
from rlhf.rollout.multiturn import rollout

SAMPLING = SamplingConfig(max_new_tokens=5, temperature=1.0)


def answer_twice(history):
    """An environment that answers the first policy turn with a fixed observation and ends after the second."""
    policy_turns = sum(t.role == "policy" for t in history)
    return ("<result>7</result>", 0.0) if policy_turns == 1 else (None, 1.0)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model = load_causal_lm(str(tiny_model_dir)).eval()
    return model, load_tokenizer(str(tiny_model_dir))


def test_environment_tokens_carry_no_gradient(tiny):
    model, tok = tiny
    record = rollout(model, tok, ["Once upon a time", "The dog"], answer_twice, SAMPLING, max_turns=2,
                     generator=torch.Generator().manual_seed(0))
    env_positions = (record.token_mask == 1) & (record.response_mask == 0)
    policy_positions = record.response_mask == 1
    assert env_positions.any() and policy_positions.any()
    assert torch.equal(record.turns, torch.tensor([2, 2])) and record.ended.all()
    assert torch.equal(record.reward, torch.tensor([1.0, 1.0]))

    # The update's loss (clipped surrogate + k3 KL term, both masked by response_mask), as in rlhf ppo.
    logits = response_logits(model, record).detach().requires_grad_(True)
    logp = token_logprobs(logits, record.response_ids) * record.response_mask
    advantages = torch.randn(record.response_mask.shape, generator=torch.Generator().manual_seed(1))
    policy_loss, _ = ppo_policy_loss(logp, logp.detach() - 0.1, advantages, record.response_mask, 0.2)
    kl_loss = masked_mean(kl_estimate(logp, logp.detach() + 0.3, "k3"), record.response_mask)
    (policy_loss + 0.1 * kl_loss).backward()
    assert torch.count_nonzero(logits.grad[env_positions]) == 0
    assert torch.count_nonzero(logits.grad[policy_positions]) > 0


def test_the_forward_reads_the_environment_tokens(tiny):
    """The observation is in the attention mask: changing it changes the next policy turn's log-probs."""
    model, tok = tiny
    record = rollout(model, tok, ["Once upon a time"], answer_twice, SAMPLING, max_turns=2,
                     generator=torch.Generator().manual_seed(0))
    env = ((record.token_mask == 1) & (record.response_mask == 0))[0].nonzero().flatten()
    changed = record.rows(torch.tensor([0]))
    changed.response_ids = changed.response_ids.clone()
    changed.response_ids[0, env[0]] = (changed.response_ids[0, env[0]] + 1) % len(tok)
    last_policy = record.response_mask[0].nonzero().flatten()[-1]
    with torch.no_grad():
        before = token_logprobs(response_logits(model, record), record.response_ids)[0, last_policy]
        after = token_logprobs(response_logits(model, changed), changed.response_ids)[0, last_policy]
    assert before != after


class CharacterTokenizer:
    """The tiny tokenizer, except that text is encoded one character at a time: decoding sampled
    ids (often several characters each) and encoding the text again gives other ids."""

    def __init__(self, inner):
        self.inner = inner
        self.pad_token_id, self.eos_token_id = inner.pad_token_id, inner.eos_token_id

    def __call__(self, text, add_special_tokens=False, **kwargs):
        return {"input_ids": [i for ch in text for i in self.inner(ch, add_special_tokens=False)["input_ids"]]}

    def decode(self, ids, **kwargs):
        return self.inner.decode(ids, **kwargs)

    def get_vocab(self):
        return self.inner.get_vocab()

    def __len__(self):
        return len(self.inner)


def test_policy_ids_are_kept_as_sampled(tiny):
    model, inner = tiny
    tok = CharacterTokenizer(inner)
    prompts = ["Once upon a time", "The dog"]
    record = rollout(model, tok, prompts, answer_twice, SAMPLING, max_turns=2,
                     generator=torch.Generator().manual_seed(3))

    # The same draws by hand: turn 1 from the prompts, turn 2 after turn 1 and the observation.
    generator = torch.Generator().manual_seed(3)
    stops, pad = stop_token_ids(tok, model), tok.pad_token_id
    prompt_ids = [tok(p)["input_ids"] for p in prompts]
    first = generate(model, prompt_ids, SAMPLING, stops, pad, generator)
    observation = tok("<result>7</result>")["input_ids"]
    turn1 = [first.response_ids[i, : int(first.response_mask[i].sum())].tolist() for i in range(2)]
    second = generate(model, [p + t + observation for p, t in zip(prompt_ids, turn1)], SAMPLING, stops, pad, generator)
    turn2 = [second.response_ids[i, : int(second.response_mask[i].sum())].tolist() for i in range(2)]

    for i in range(2):
        expected = turn1[i] + observation + turn2[i]
        assert record.response_ids[i, : len(expected)].tolist() == expected
        assert record.response_mask[i, : len(expected)].tolist() == [1] * len(turn1[i]) + [0] * len(observation) + [1] * len(turn2[i])
        assert record.logprobs[i, : len(turn1[i])].tolist() == first.logprobs[i, : len(turn1[i])].tolist()
    # Re-encoding the policy's text would have changed the ids: the check above is not vacuous.
    assert any(tok(inner.decode(t))["input_ids"] != t for t in turn1 + turn2)


def test_turn_ends_at_a_stop_string(tiny):
    """A policy turn is cut right after the token that completes a stop string; the ids kept are a
    prefix of those sampled."""
    model, tok = tiny
    record = rollout(model, tok, ["Once upon a time"], lambda h: (None, 0.0), SamplingConfig(12), max_turns=1,
                     stop_strings=(" ",), generator=torch.Generator().manual_seed(0))
    free = rollout(model, tok, ["Once upon a time"], lambda h: (None, 0.0), SamplingConfig(12), max_turns=1,
                   generator=torch.Generator().manual_seed(0))
    kept = int(record.response_mask.sum())
    assert record.response_ids[0, :kept].tolist() == free.response_ids[0, :kept].tolist()
    text = tok.decode(record.response_ids[0, :kept].tolist())
    assert " " in text and " " not in tok.decode(record.response_ids[0, : kept - 1].tolist())


@pytest.mark.parametrize("expression, value", [("12*7", 84), ("12+7", 19), ("3-10", -7), ("-(2+3)*4", -20),
                                               ("7/2", Fraction(7, 2)), (" 6 / 3 ", 2)])
def test_calculator_computes_integer_arithmetic(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize("expression", ["__import__('os').system('true')", "os", "print(1)", "2**10", "1.5+1",
                                        "'a'*3", "[1, 2]", "1 if 1 else 2", "True+1", "1/0", "9" * 70,
                                        "999999*999999*999999", "12 7", "", "(lambda: 1)()", "1<2", "x:=1"])
def test_calculator_refuses_anything_but_arithmetic(expression):
    with pytest.raises(CalculatorError):
        calculate(expression)


def test_calculator_environment_answers_calls_and_checks_the_answer():
    env = CalculatorEnv(max_calls=1)
    prompt = Turn("prompt", "12*7=")
    assert env([prompt, Turn("policy", "<calc>12*7</calc>")]) == ("<result>84</result>", 0.0)
    observation, reward = env([prompt, Turn("policy", "<calc>open('x')</calc>")])
    assert observation.startswith("<result>error:") and reward == 0.0
    assert env([prompt, Turn("policy", "<calc>12*7</calc>"), Turn("env", "<result>84</result>"), Turn("policy", "84")]) \
        == (None, 1.0)
    assert env([prompt, Turn("policy", "85")]) == (None, 0.0)
    # a second call past max_calls ends the episode unrewarded
    assert env([prompt, Turn("policy", "<calc>1+1</calc>"), Turn("env", "<result>2</result>"),
                Turn("policy", "<calc>12*7</calc>")]) == (None, 0.0)
