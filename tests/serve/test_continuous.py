"""rlhf.rollout.continuous: rows admitted and retired between decode steps decode exactly as
each prompt would alone; per-row sampling settings and generators."""

from __future__ import annotations

import pytest
import torch

from rlhf.rollout.continuous import DecodeBatch, sample_rows
from rlhf.rollout.generate import SamplingConfig, generate


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from rlhf.models.load import load_causal_lm, load_tokenizer

    return load_causal_lm(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir)


def alone(model, ids, steps):
    """Greedy tokens of one prompt decoded by itself (rlhf.rollout.generate, no stop token)."""
    out = generate(model, [ids], SamplingConfig(max_new_tokens=steps, temperature=0), [-1], 0)
    return out.response_ids[0].tolist()


def full_forward_logits(model, prompt, tokens):
    """Next-token logits (len(tokens), V) for each response position, from one forward pass without a cache."""
    ids = torch.tensor([prompt + tokens[:-1]])
    with torch.no_grad():
        return model(input_ids=ids).logits[0, len(prompt) - 1 :].float()


def test_staggered_admission_and_retirement_match_decoding_alone(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in
               ("Once upon a time there was", "Tom", "The dog was sad because it rained and", "Sue laughed")]
    batch = DecodeBatch(model, tok.pad_token_id)
    got: dict[int, list[int]] = {}
    seen: dict[int, list[torch.Tensor]] = {}  # the logits each row's tokens were drawn from
    rows: list[int] = []  # prompt index of each batch row

    def take(logits, which):
        tokens = logits.argmax(-1)
        batch.set_pending(which, tokens)
        for r, t in zip(range(*which.indices(batch.size)), tokens.tolist()):
            got[rows[r]].append(t)
        for r, row_logits in zip(range(*which.indices(batch.size)), logits):
            seen[rows[r]].append(row_logits)

    def admit(indices):
        for i in indices:
            got[i], seen[i] = [], []
        start = batch.size
        rows.extend(indices)
        take(batch.admit([prompts[i] for i in indices]), slice(start, batch.size))

    admit([0])
    for _ in range(3):
        take(batch.step(), slice(0, batch.size))
    admit([1, 2])  # a short and a long prompt join a row already 4 tokens in
    for _ in range(2):
        take(batch.step(), slice(0, batch.size))
    batch.retire([0])  # the first row leaves; its padding columns are cut
    del rows[0]
    admit([3])
    for _ in range(4):
        take(batch.step(), slice(0, batch.size))
    for i, tokens in got.items():
        assert tokens == alone(model, prompts[i], len(tokens)), i
        # the same numbers, not just the same argmax: positions and masks as if the row were alone
        torch.testing.assert_close(torch.stack(seen[i]), full_forward_logits(model, prompts[i], tokens),
                                   atol=1e-4, rtol=1e-4)
    assert batch.size == 3 and (batch.mask.sum(0) > 0).all()  # no all-padding column left
    batch.retire([0, 1, 2])
    assert batch.size == 0


def test_sample_rows_each_row_its_own_settings_and_generator():
    logits = torch.randn(3, 50)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (1, 2, 3)]  # noqa: E731
    temperature, top_p = torch.tensor([0.0, 1.0, 1.0]), torch.tensor([1.0, 1.0, 1e-6])
    tokens = sample_rows(logits, temperature, top_p, gens())
    assert tokens[0] == logits[0].argmax() and tokens[2] == logits[2].argmax()  # greedy; nucleus of one token
    # a row's draw depends on its own generator only, not on which rows share the batch
    alone = sample_rows(logits[1:2], temperature[1:2], top_p[1:2], gens()[1:2])
    assert tokens[1] == alone[0]
    # at temperature 1 the draws follow softmax(logits)
    row = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.cat([sample_rows(row, torch.ones(1), torch.ones(1), [g]) for _ in range(4000)]),
                            minlength=4).float() / 4000
    assert torch.allclose(counts, row.softmax(-1)[0], atol=0.03)


def test_engine_survives_a_failed_decode_step(model_and_tokenizer, monkeypatch):
    """A step that raises fails the running requests with an error event; the next ones are served."""
    import asyncio

    from rlhf.rollout import continuous
    from rlhf.serve.engine import ContinuousEngine, Sequence

    model, tok = model_and_tokenizer
    real_step, calls = continuous.DecodeBatch.step, []

    def flaky_step(self):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory (simulated)")
        return real_step(self)

    monkeypatch.setattr(continuous.DecodeBatch, "step", flaky_step)
    engine = ContinuousEngine(model, tok)
    ids = tok("Once upon a time", add_special_tokens=False)["input_ids"]

    async def ask() -> list[tuple]:
        events: asyncio.Queue = asyncio.Queue()
        seq = Sequence(ids, 6, 0.0, 1.0, (), None, events, asyncio.get_running_loop(), tokenizer=tok)
        engine.submit([seq])
        got = [await asyncio.wait_for(events.get(), 30)]
        while got[-1][2] is None:
            got.append(await asyncio.wait_for(events.get(), 30))
        return got

    try:
        first = asyncio.run(ask())
        assert first[-1][2] == "error" and "simulated" in first[-1][1]
        second = asyncio.run(ask())
        assert second[-1][2] in ("stop", "length")
    finally:
        engine.close()
