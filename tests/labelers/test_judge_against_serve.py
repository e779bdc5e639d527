"""`rlhf judge` against a real `rlhf serve` over HTTP (loopback, a free port), with two tiny served
judges: `always-a`, the tiny model fine-tuned to answer "[[A]]" whatever it reads (a judge with
total position bias), and `garbage`, the tiny model as pretrained, which never writes a verdict.
The server logs each chat request it gets, so the test sees what the judge asked (issue 27 items 1
and 2: the served context fitted, errors in one line, no usable verdict a failure, malformed answers cached)."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest

from openai import OpenAI

from rlhf.cli import main
from rlhf.labelers.judge import template

PAIR = re.compile(r"\[Response A\]\n(.*?)\n\n\[Response B\]\n(.*?)\n\nExplain", re.S)
ROWS = [("Once upon a time", "there was a cat", "the dog ran far"),
        ("Tom had a ball", "he threw it", "it was red and he laughed"),
        ("The sun came out", "the dog was happy", "it rained")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def always_a(tiny_model_dir, tmp_path_factory):
    """The tiny model fine-tuned to answer the pairwise template with "[[A]]" (SFT, chat format, the whole request)."""
    from rlhf.config import SFTConfig
    from rlhf.train import sft

    root = tmp_path_factory.mktemp("always-a")
    rows = []
    for n in range(12):
        text = template("pairwise-v1").format(prompt=f"Story {n}: the cat", response_a="a " * (n % 4 + 1) + "dog",
                                              response_b=f"ran {n}")
        rows.append({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "[[A]]"}]})
    data = root / "always-a.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    sft.run(SFTConfig(model=str(tiny_model_dir), data=str(data), out=str(root / "run"), max_steps=40, batch_size=4,
                      lr=3e-3, warmup_steps=0, max_length=448, precision="fp32", progress=False, save_every=0))
    return root / "run" / "model"


@pytest.fixture(scope="module")
def server(tiny_model_dir, always_a):
    """`rlhf serve` with both judges; `.asked` holds the body of every chat request it received."""
    import uvicorn

    from rlhf.config import ServeConfig
    from rlhf.serve.server import build_app

    cfg = ServeConfig(model=(f"garbage={tiny_model_dir}", f"always-a={always_a}"), port=free_port(), max_tokens=8)
    app = build_app(cfg)
    app.state.asked = []

    @app.middleware("http")
    async def log_requests(request, call_next):
        if request.url.path == "/v1/chat/completions":
            app.state.asked.append(json.loads(await request.body()))
        return await call_next(request)

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=cfg.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "rlhf serve did not start"
        time.sleep(0.05)
    app.state.url = f"http://127.0.0.1:{cfg.port}/v1"
    yield app.state
    server.should_exit = True
    thread.join(timeout=10)
    for served in app.state.models.values():
        served.engine.close()


@pytest.fixture
def candidates(tmp_path):
    path = tmp_path / "candidates.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "responses": [a, b]}) + "\n" for p, a, b in ROWS), encoding="utf-8")
    return path


def judge(server, data, out, model, *flags) -> tuple[int, dict | None]:
    code = main(["judge", "--data", str(data), "--out", str(out), "--api-base", server.url, "--api-model", model,
                 "--max-new-tokens", "8", *flags])
    summary = out.with_name(out.name + ".summary.json")
    return code, json.loads(summary.read_text()) if summary.exists() else None


def shown_pairs(asked: list[dict]) -> list[tuple[str, str]]:
    return [PAIR.search(body["messages"][-1]["content"]).groups() for body in asked]


def test_both_orders_asked_flips_are_ties_and_rerun_hits_the_cache(server, candidates, tmp_path, capsys):
    before = len(server.asked)
    code, summary = judge(server, candidates, tmp_path / "judged.jsonl", "always-a", "--retries", "0")
    asked = server.asked[before:]
    assert len(asked) == 2 * len(ROWS) == summary["requests"]  # one request per order, counted on both sides
    assert all(body["model"] == "always-a" for body in asked)
    shown = shown_pairs(asked)
    for _, a, b in ROWS:  # every pair in both orders
        assert (a, b) in shown and (b, a) in shown
    # "[[A]]" whatever the order: every verdict flips with the swap, so every pair is a tie
    assert summary["ties"] == len(ROWS) and summary["comparisons"] == 0 and summary["flipped_pairs"] == len(ROWS)
    assert summary["position_bias"] == 1.0 and summary["malformed"] == 0
    assert code == 1 and not (tmp_path / "judged.jsonl").exists()  # no usable verdict: a failure that says why
    assert "3 pairs whose verdict flipped with the order" in capsys.readouterr().err

    rerun_before = len(server.asked)
    code, again = judge(server, candidates, tmp_path / "judged-again.jsonl", "always-a", "--retries", "0",
                        "--cache", str(tmp_path / "judged.jsonl.cache.jsonl"))
    assert len(server.asked) == rerun_before  # the server got no request the second time
    assert again["requests"] == 0 and again["cache_hits"] == 2 * len(ROWS) and again["ties"] == len(ROWS)


def test_no_usable_verdict_exits_non_zero_and_malformed_answers_are_cached(server, candidates, tmp_path, capsys):
    """Issue 27 item 2: `--on-malformed tie` with a model that never writes a verdict wrote an empty file and
    exited 0, and a rerun asked every request again the same way."""
    out, before = tmp_path / "garbage.jsonl", len(server.asked)
    code, summary = judge(server, candidates, out, "garbage", "--retries", "1", "--on-malformed", "tie")
    assert code == 1 and not out.exists()
    assert len(server.asked) - before == summary["requests"] == 2 * 2 * len(ROWS)  # both orders, each asked twice
    assert summary["retries"] == 2 * len(ROWS) and summary["malformed"] == 2 * len(ROWS)
    assert summary["ties"] == len(ROWS) and summary["comparisons"] == 0 and summary["decisive_answers"] == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "no usable verdict: 3 pairs -> 0 comparisons (6 answers malformed)" in err
    assert "instruction-tuned judge model (--api-model NAME" in err and "--retries 2 or more" in err

    before = len(server.asked)  # the same command again: every malformed answer is in the cache
    code, again = judge(server, candidates, out, "garbage", "--retries", "1", "--on-malformed", "tie")
    assert code == 1 and len(server.asked) == before
    assert again["requests"] == 0 and again["malformed_cached"] == again["malformed"] == 2 * len(ROWS)

    code, more = judge(server, candidates, out, "garbage", "--retries", "2", "--on-malformed", "tie")
    asked = server.asked[before:]  # one more attempt per request, sampled with a seed not asked before
    assert code == 1 and more["requests"] == len(asked) == 2 * len(ROWS)
    assert {(body["seed"], body["temperature"]) for body in asked} == {(2, 0.7)}

    code, summary = judge(server, candidates, tmp_path / "strict.jsonl", "garbage", "--retries", "0")
    assert code == 1 and summary is None  # --on-malformed error (the default): stop, naming the pair
    err = capsys.readouterr().err
    assert "malformed answer for pair 0 (prompt 'Once upon a time')" in err and "after 1 attempts" in err


def test_revise_with_no_usable_revision_exits_non_zero(server, candidates, tmp_path, capsys):
    out = tmp_path / "revisions.jsonl"
    code = main(["judge", "revise", "--data", str(candidates), "--out", str(out), "--api-base", server.url,
                 "--api-model", "garbage", "--max-new-tokens", "8", "--retries", "0", "--on-malformed", "tie"])
    assert code == 1 and not out.exists()
    err = capsys.readouterr().err
    assert f"no usable revision: {2 * len(ROWS)} responses -> 0 revisions" in err and "instruction-tuned" in err
    assert json.loads((tmp_path / "revisions.jsonl.summary.json").read_text())["revisions"] == 0


def test_a_cap_over_the_served_context_is_fitted_to_what_the_request_leaves(server, tmp_path):
    """Issue 27 item 1: `--max-new-tokens 256` + a 291-token request over a 512-token context was an
    openai.BadRequestError traceback. The judge reads the context from /v1/models and asks again with
    max_tokens = context - the request's tokens."""
    from rlhf.data.records import Message
    from rlhf.data.tokenize import encode_prompt
    from rlhf.labelers.judge import build_judge, summary

    served = server.models["always-a"]
    judge = build_judge(api_base=server.url, api_model="always-a", cache=tmp_path / "c.jsonl", retries=0,
                        max_new_tokens=served.context)
    before = len(server.asked)
    assert judge.prefer(*zip(*ROWS)) == [None] * len(ROWS)  # answered ("[[A]]" both ways: ties), no exception
    asked = server.asked[before:]
    assert len(asked) == 2 * 2 * len(ROWS)  # each request refused once at the cap, then fitted
    caps: dict[str, list[int]] = {}  # request text -> max_tokens asked, in order (requests go several at a time)
    for body in asked:
        caps.setdefault(body["messages"][0]["content"], []).append(body["max_tokens"])
    assert len(caps) == 2 * len(ROWS)
    for text, asked_caps in caps.items():
        request = len(encode_prompt(served.tokenizer, (Message("user", text),)))
        assert asked_caps == [served.context, served.context - request]  # refused at the cap, then fitted
    assert judge.stats.position_bias == 1.0  # the fitted requests were answered
    assert summary(judge)["max_tokens_fitted"] == 2 * len(ROWS) and summary(judge)["context"] == 512
    card = OpenAI(base_url=server.url, api_key="none").models.retrieve("always-a")
    assert card.model_extra["max_model_len"] == served.context == 512  # on the model card, as vLLM reports it


def test_endpoint_errors_the_judge_cannot_mend_are_one_line(server, candidates, tmp_path, capsys):
    def one_line_error(*args) -> str:
        code = main(["judge", "--data", str(args[0]), "--out", str(tmp_path / "j.jsonl"), *args[1:]])
        err = capsys.readouterr().err
        assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        return err

    err = one_line_error(candidates, "--api-base", server.url, "--api-model", "nosuch")
    assert f"judge endpoint {server.url} (model 'nosuch'): 404 The model 'nosuch' does not exist" in err
    assert "--api-model" in err
    long = tmp_path / "long.jsonl"  # a request that alone is longer than the served model's context
    long.write_text(json.dumps({"prompt": "Once", "responses": ["dog " * 600, "cat"]}) + "\n", encoding="utf-8")
    err = one_line_error(long, "--api-base", server.url, "--api-model", "always-a")
    assert "fills the model's context of 512 tokens" in err and "longer context" in err
    err = one_line_error(candidates, "--api-base", f"http://127.0.0.1:{free_port()}/v1", "--api-model", "x")
    assert "cannot reach it: is the server running" in err
