"""`rlhf serve` through the official `openai` client: chat, streaming, completion, n, stop,
seed, usage counts, greedy = the model's own `generate`, and bad input."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

CHAT = [{"role": "user", "content": "Tell me about the cat."}]


def test_models_lists_both_policies(client, tiny_model_dir):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"tiny", "tiny-b"}
    assert client.models.retrieve("tiny-b").id == "tiny-b"
    # the context (prompt + answer) on the model card, named as vLLM names it: clients fit max_tokens to it
    card = client.models.retrieve("tiny-b")
    assert models["tiny"].model_extra["max_model_len"] == card.model_extra["max_model_len"] == 512


def test_chat_completion_and_usage(client, server):
    from rlhf.data.records import Message
    from rlhf.data.tokenize import encode_prompt

    out = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12, temperature=0)
    choice = out.choices[0]
    assert out.object == "chat.completion" and choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.finish_reason in ("stop", "length")
    tokenizer = server.app.state.models["tiny"].tokenizer
    assert out.usage.prompt_tokens == len(encode_prompt(tokenizer, (Message("user", CHAT[0]["content"]),)))
    assert 1 <= out.usage.completion_tokens <= 12
    assert out.usage.completion_tokens == 12 or choice.finish_reason == "stop"
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_streaming_equals_the_whole_answer(client):
    whole = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=16, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=16, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2  # token by token, not one blob
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completion_plain_and_streamed(client):
    out = client.completions.create(model="tiny-b", prompt="Once upon a time", max_tokens=10, temperature=0)
    assert out.object == "text_completion" and out.model == "tiny-b"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny-b", prompt="Once upon a time", max_tokens=10, temperature=0, stream=True))
    assert streamed == out.choices[0].text and out.choices[0].text
    assert out.usage.completion_tokens == 10 or out.choices[0].finish_reason == "stop"


def test_n_choices_and_seed_reproducibility(client):
    kwargs = dict(model="tiny", prompt="The dog", max_tokens=16, temperature=1.0, n=3, seed=7)
    first = client.completions.create(**kwargs)
    again = client.completions.create(**kwargs)
    other = client.completions.create(**{**kwargs, "seed": 8})
    assert sorted(c.index for c in first.choices) == [0, 1, 2]
    texts = [c.text for c in sorted(first.choices, key=lambda c: c.index)]
    assert texts == [c.text for c in sorted(again.choices, key=lambda c: c.index)]
    assert texts != [c.text for c in sorted(other.choices, key=lambda c: c.index)]
    assert len(set(texts)) > 1  # n samples, not one copied
    lengths = sum(1 for c in first.choices if c.finish_reason == "length")
    assert 16 * lengths + (3 - lengths) <= first.usage.completion_tokens <= 48  # summed over the choices
    assert first.usage.prompt_tokens == client.completions.create(**{**kwargs, "n": 1}).usage.prompt_tokens


def test_stop_string_cuts_the_answer(client):
    full = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=24, temperature=0).choices[0]
    assert len(full.text) > 6
    stop = full.text[3:6]
    cut = full.text[: full.text.find(stop)]
    out = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=24, temperature=0, stop=[stop])
    assert out.choices[0].text == cut and out.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=24, temperature=0, stop=stop, stream=True))
    assert streamed == cut


PROMPTS = ["Once upon a time", "Tom had a red", "The dog was sad because", "The sun", "Sue and Tom laughed at the"]


def hf_greedy(served, text: str, max_new: int) -> str:
    """The model's own greedy `generate` (transformers), decoded as the server decodes."""
    import torch

    engine, tok = served.engine, served.tokenizer
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    out = engine.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new,
                                eos_token_id=sorted(served.stop_ids), pad_token_id=tok.pad_token_id)
    new = [t for t in out[0, ids.shape[1]:].tolist() if t not in served.stop_ids]
    return tok.decode(new, skip_special_tokens=True)


def test_greedy_under_concurrency_equals_generate(client, server):
    """Requests of different lengths arrive together and are batched; each answer is what
    `model.generate` gives for that prompt alone."""
    max_tokens = [20, 7, 24, 13, 18]

    def ask(i):
        return client.completions.create(model="tiny", prompt=PROMPTS[i], max_tokens=max_tokens[i], temperature=0)

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        answers = list(pool.map(ask, range(len(PROMPTS))))
    served = server.app.state.models["tiny"]
    for i, answer in enumerate(answers):
        assert answer.choices[0].text == hf_greedy(served, PROMPTS[i], max_tokens[i]), PROMPTS[i]


def test_serial_baseline_engine_equals_generate(tiny_model_dir):
    from openai import OpenAI

    from .conftest import start

    srv = start([str(tiny_model_dir)], engine="serial")
    try:
        c = OpenAI(base_url=srv.url, api_key="unused", max_retries=0, timeout=60)
        name = next(iter(srv.app.state.models))
        out = c.completions.create(model=name, prompt=PROMPTS[0], max_tokens=15, temperature=0)
        assert out.choices[0].text == hf_greedy(srv.app.state.models[name], PROMPTS[0], 15)
        streamed = "".join(ch.choices[0].text for ch in c.completions.create(
            model=name, prompt=PROMPTS[0], max_tokens=15, temperature=0, stream=True))
        assert streamed == out.choices[0].text
    finally:
        srv.stop()


def still_serving(client):
    assert client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=3).choices[0].message is not None


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope", messages=CHAT)
    assert err.value.status_code == 404 and err.value.body["code"] == "model_not_found"
    assert err.value.body["type"] == "invalid_request_error" and "nope" in err.value.body["message"]
    still_serving(client)


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_negative_max_tokens_is_400(client, field):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=CHAT, **{field: -5})
    assert err.value.status_code == 400 and err.value.body["param"] == field
    still_serving(client)


def test_one_megabyte_prompt_is_4xx(client):
    with pytest.raises(openai.APIStatusError) as err:
        client.completions.create(model="tiny", prompt="cat " * 2**18, max_tokens=4)
    assert 400 <= err.value.status_code < 500
    assert err.value.body["code"] in ("context_length_exceeded", "body_too_large")
    still_serving(client)


@pytest.mark.parametrize("body", [b'{"model": "tiny", "messages": [', b"\xff\xfe", b"[1, 2]", b'{"model": "tiny"}',
                                  b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 0}',
                                  b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": 3}',
                                  b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "top_p": "x"}',
                                  b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stop": ["a", ""]}',
                                  b'{"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}',
                                  b'{"model": "tiny", "messages": []}'])
def test_malformed_requests_are_400(server, client, body):
    r = httpx.post(f"{server.url}/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    still_serving(client)


def test_too_long_request_body_is_413(server, client):
    r = httpx.post(f"{server.url}/completions", json={"model": "tiny", "prompt": "x" * (3 * 2**20)})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    still_serving(client)


def test_client_leaving_mid_stream_does_not_stop_the_server(server, client):
    with httpx.stream("POST", f"{server.url}/completions", timeout=30,
                      json={"model": "tiny", "prompt": "Once", "max_tokens": 200, "stream": True}) as r:
        assert r.status_code == 200
        next(r.iter_lines())
    still_serving(client)


def test_rlhf_serve_command_on_loopback(tiny_model_dir, tmp_path):
    """`rlhf serve` as a user runs it: a process, two --model flags, the openai client."""
    import os
    import subprocess
    import sys
    import time

    from openai import OpenAI

    from .conftest import free_port

    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "rlhf.cli", "serve", "--model", str(tiny_model_dir), "--model",
                             f"second={tiny_model_dir}", "--port", str(port), "--threads", "1"],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        c = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=30)
        deadline = time.time() + 60
        while True:
            try:
                names = {m.id for m in c.models.list().data}
                break
            except openai.APIConnectionError:
                assert proc.poll() is None and time.time() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.2)
        assert names == {tiny_model_dir.name, "second"}
        out = c.chat.completions.create(model="second", messages=CHAT, max_tokens=5, temperature=0)
        assert out.usage.completion_tokens >= 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)
