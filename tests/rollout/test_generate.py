"""Batched KV-cache sampling: log-probs match a fresh forward, padding is invisible, stops at EOS."""

import pytest
import torch
from torch.testing import assert_close

from rlhf.data.tokenize import encode_prompt
from rlhf.models.load import load_causal_lm, load_tokenizer
from rlhf.rollout.generate import (
    SamplingConfig,
    _draw,
    _filter_logits,
    decode_responses,
    generate,
    sample_responses,
    stop_token_ids,
)

PROMPTS = ["Once upon a time", "The dog", "Tom had a red ball. He threw it to his friend", "Sue"]


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)


def fresh_logprobs(model, rollout, temperature=1.0):
    """log softmax(logits / T) of the response tokens from one forward over prompt + response."""
    mask = rollout.attention_mask
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=rollout.tokens, attention_mask=mask, position_ids=positions).logits
    prompt_len = rollout.prompt_ids.shape[1]
    logits = logits[:, prompt_len - 1 : -1].float() / temperature
    picked = torch.log_softmax(logits, -1).gather(-1, rollout.response_ids[..., None]).squeeze(-1)
    return picked * rollout.response_mask


def ids_of(tok, prompts):
    return [encode_prompt(tok, p) for p in prompts]


@pytest.mark.parametrize("sampling", [
    SamplingConfig(max_new_tokens=12),
    SamplingConfig(max_new_tokens=12, temperature=0.7, top_k=20, top_p=0.9),
])
def test_sampler_logprobs_equal_fresh_forward(lm, sampling):
    model, tok = lm
    prompts = ids_of(tok, PROMPTS)
    assert len({len(p) for p in prompts}) > 1  # left padding is exercised
    g = torch.Generator().manual_seed(0)
    rollout = generate(model, prompts, sampling, [tok.eos_token_id], tok.pad_token_id, g)
    assert rollout.response_ids.shape == rollout.logprobs.shape == rollout.response_mask.shape
    assert rollout.response_mask.sum() > len(PROMPTS)
    expected = fresh_logprobs(model, rollout, sampling.temperature)
    assert_close(rollout.logprobs, expected, rtol=0, atol=1e-4)
    assert (rollout.logprobs[rollout.response_mask.bool()] < 0).all()


def test_left_padding_is_invisible(lm):
    model, tok = lm
    prompts = ids_of(tok, PROMPTS)
    greedy = SamplingConfig(max_new_tokens=8, temperature=0.0)
    batch = generate(model, prompts, greedy, [tok.eos_token_id], tok.pad_token_id)
    for i, p in enumerate(prompts):
        alone = generate(model, [p], greedy, [tok.eos_token_id], tok.pad_token_id)
        n = int(alone.response_mask.sum())
        assert torch.equal(batch.response_ids[i, :n], alone.response_ids[0, :n])
        assert_close(batch.logprobs[i, :n], alone.logprobs[0, :n], rtol=0, atol=1e-4)
        # the prompt sits at the right end of its padded row
        assert batch.prompt_ids[i, -len(p):].tolist() == p
        assert batch.prompt_mask[i].sum() == len(p)


def test_stops_at_eos_and_pads_after(lm):
    model, tok = lm
    prompts = ids_of(tok, PROMPTS * 4)
    sampling = SamplingConfig(max_new_tokens=10)
    # Declare some frequent tokens as stop tokens so that rows stop at different places.
    probe = generate(model, prompts, sampling, [tok.eos_token_id], tok.pad_token_id, torch.Generator().manual_seed(1))
    frequent = probe.response_ids[probe.response_mask.bool()].bincount().topk(3).indices.tolist()
    stops = [tok.eos_token_id, *frequent]
    r = generate(model, prompts, sampling, stops, tok.pad_token_id, torch.Generator().manual_seed(1))
    lengths = r.response_mask.sum(1)
    assert r.ended.any() and lengths.min() < lengths.max()
    for row, mask, ended, n in zip(r.response_ids, r.response_mask, r.ended, lengths.tolist()):
        assert mask[:n].all() and not mask[n:].any()  # one block of ones, then zeros
        assert (row[n:] == tok.pad_token_id).all()
        is_stop = torch.isin(row[:n], torch.tensor(stops))
        if ended:  # the stop token is the last response token, and the only one
            assert is_stop[-1] and not is_stop[:-1].any()
        else:
            assert n == sampling.max_new_tokens and not is_stop.any()
    assert (r.logprobs[r.response_mask == 0] == 0).all()


def test_same_seed_same_samples(lm):
    model, tok = lm
    prompts = ids_of(tok, PROMPTS)
    s = SamplingConfig(max_new_tokens=10)
    run = lambda seed: generate(model, prompts, s, [tok.eos_token_id], tok.pad_token_id,  # noqa: E731
                                torch.Generator().manual_seed(seed))
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.response_ids, c.response_ids)


def test_top_k_one_and_tiny_top_p_are_greedy(lm):
    model, tok = lm
    prompts = ids_of(tok, PROMPTS)
    greedy = generate(model, prompts, SamplingConfig(max_new_tokens=6, temperature=0), [tok.eos_token_id], tok.pad_token_id)
    for s in (SamplingConfig(max_new_tokens=6, top_k=1), SamplingConfig(max_new_tokens=6, top_p=1e-6)):
        r = generate(model, prompts, s, [tok.eos_token_id], tok.pad_token_id, torch.Generator().manual_seed(3))
        assert torch.equal(r.response_ids, greedy.response_ids)


def test_filter_logits_hand():
    # probs of [2, 1, 0, -inf-ish]: softmax([2,1,0]) = [0.665, 0.245, 0.090]
    logits = torch.tensor([[2.0, 1.0, 0.0, -30.0]])
    assert torch.isinf(_filter_logits(logits, 2, 1.0)[0, 2:]).all()
    # top_p 0.8: 0.665 < 0.8, so the second token is needed; the third is not
    kept = torch.isfinite(_filter_logits(logits, 0, 0.8))[0].tolist()
    assert kept == [True, True, False, False]
    # top_p 0.5: the first token alone already holds 0.665
    assert torch.isfinite(_filter_logits(logits, 0, 0.5))[0].tolist() == [True, False, False, False]


def test_draw_follows_the_distribution():
    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2]]).expand(40_000, 4).contiguous()
    tokens = _draw(probs, torch.Generator().manual_seed(0))
    freq = tokens.bincount(minlength=4).float() / len(tokens)
    assert freq[1] == 0  # a zero-probability token is never drawn
    assert_close(freq, probs[0], rtol=0, atol=0.01)


def test_sampling_config_validation():
    for bad in (dict(max_new_tokens=0), dict(temperature=-1), dict(top_k=-1), dict(top_p=0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            SamplingConfig(**bad)


def test_sample_responses_text(lm):
    model, tok = lm
    s = SamplingConfig(max_new_tokens=8)
    out = sample_responses(model, tok, PROMPTS[:3], s, k=2, seed=5, batch_size=4)
    assert len(out) == 3 and all(len(r) == 2 and all(isinstance(t, str) for t in r) for r in out)
    assert out == sample_responses(model, tok, PROMPTS[:3], s, k=2, seed=5, batch_size=4)
    assert tok.eos_token_id in stop_token_ids(tok, model)
    r = generate(model, ids_of(tok, PROMPTS[:1]), s, [tok.eos_token_id], tok.pad_token_id)
    assert decode_responses(tok, r)[0] == tok.decode(r.response_ids[0, : int(r.response_mask.sum())],
                                                     skip_special_tokens=True)
