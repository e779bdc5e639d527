"""`rlhf judge` against a real `rlhf serve` over HTTP (loopback, a free port), with two tiny served
judges: `always-a`, the tiny model fine-tuned to answer "[[A]]" whatever it reads (a judge with
total position bias), and `garbage`, the tiny model as pretrained, which never writes a verdict.
The server logs each chat request it gets, so the test sees what the judge asked."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest

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


def test_both_orders_asked_flips_are_ties_and_rerun_hits_the_cache(server, candidates, tmp_path):
    before = len(server.asked)
    code, summary = judge(server, candidates, tmp_path / "judged.jsonl", "always-a", "--retries", "0")
    assert code == 0
    asked = server.asked[before:]
    assert len(asked) == 2 * len(ROWS) == summary["requests"]  # one request per order, counted on both sides
    assert all(body["model"] == "always-a" for body in asked)
    shown = shown_pairs(asked)
    for _, a, b in ROWS:  # every pair in both orders
        assert (a, b) in shown and (b, a) in shown
    # "[[A]]" whatever the order: every verdict flips with the swap, so every pair is a tie
    assert summary["ties"] == len(ROWS) and summary["comparisons"] == 0
    assert summary["position_bias"] == 1.0 and summary["malformed"] == 0

    rerun_before = len(server.asked)
    code, again = judge(server, candidates, tmp_path / "judged-again.jsonl", "always-a", "--retries", "0",
                        "--cache", str(tmp_path / "judged.jsonl.cache.jsonl"))
    assert code == 0
    assert len(server.asked) == rerun_before  # the server got no request the second time
    assert again["requests"] == 0 and again["cache_hits"] == 2 * len(ROWS) and again["ties"] == len(ROWS)


def test_garbage_answers_of_a_real_model_are_counted_not_a_crash(server, candidates, tmp_path, capsys):
    before = len(server.asked)
    code, summary = judge(server, candidates, tmp_path / "garbage.jsonl", "garbage", "--retries", "1",
                          "--on-malformed", "tie")
    assert code == 0
    assert len(server.asked) - before == summary["requests"] == 2 * 2 * len(ROWS)  # both orders, each asked twice
    assert summary["retries"] == 2 * len(ROWS) and summary["malformed"] == 2 * len(ROWS)
    assert summary["ties"] == len(ROWS) and summary["comparisons"] == 0 and summary["decisive_answers"] == 0
    assert (tmp_path / "garbage.jsonl").read_text() == ""

    code, summary = judge(server, candidates, tmp_path / "strict.jsonl", "garbage", "--retries", "0")
    assert code == 1 and summary is None  # --on-malformed error (the default): stop, naming the pair
    err = capsys.readouterr().err
    assert "malformed answer for pair 0 (prompt 'Once upon a time')" in err and "after 1 attempts" in err
