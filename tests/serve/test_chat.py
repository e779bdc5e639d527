"""The chat page of `rlhf serve --db`: a user chats, gives a thumbs down with a reason, uses
regenerate and picks an answer, votes in the arena; `rlhf label export` then holds exactly
those labels, with the models that wrote each response in the store. Driven with plain form
posts (the page works without JavaScript)."""

from __future__ import annotations

import html
import json
import re
import shutil

import httpx
import pytest


def hidden(page: str, name: str) -> list[str]:
    return [html.unescape(v) for v in re.findall(rf'name="{name}" value="([^"]*)"', page)]


def answers(page: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r'<div class="answer"[^>]*>\s*<b>[^<]*</b><p>(.*?)</p>', page, re.S)]


@pytest.fixture(scope="module")
def chat_server(tiny_model_dir, tmp_path_factory):
    from .conftest import start

    tmp = tmp_path_factory.mktemp("chat")
    second = shutil.copytree(tiny_model_dir, tmp / "policy-b")
    srv = start([f"alpha={tiny_model_dir}", f"beta={second}"], db=str(tmp / "feedback.db"), max_tokens=12)
    yield srv, tmp, {"alpha": str(tiny_model_dir), "beta": str(second)}
    srv.stop()


def test_chat_feedback_is_exported_with_its_models(chat_server):
    from rlhf.config import LabelExportConfig
    from rlhf.feedback import export
    from rlhf.feedback.store import open_store
    from rlhf.feedback.tables import Label, Response

    srv, tmp, paths = chat_server
    base = srv.url.removesuffix("/v1")
    http = httpx.Client(base_url=base, timeout=60)
    home = http.get("/chat")
    assert home.status_code == 200 and "<form" in home.text and "<script" not in home.text and "http" not in home.text
    csrf = hidden(home.text, "csrf")[0]

    # 1. chat, thumbs down with a reason
    page = http.post("/chat/send", data={"model": "alpha", "message": "Tell me about the cat.", "history": "[]", "csrf": csrf}).text
    (first_answer,) = answers(page)
    task, request_id, history = hidden(page, "task")[0], hidden(page, "request_id")[0], hidden(page, "history")[0]
    assert json.loads(history) == [{"role": "user", "content": "Tell me about the cat."}]
    thumbs = {"task": task, "request_id": request_id, "history": history, "model": "alpha", "up": "0",
              "reason": "it rambles", "csrf": csrf}
    assert "feedback saved" in http.post("/chat/thumbs", data=thumbs).text
    assert http.post("/chat/thumbs", data=thumbs).status_code == 200  # a resent form stores nothing twice

    # 2. a second message, regenerate, pick the second answer
    page = http.post("/chat/send", data={"model": "alpha", "message": "And the dog?", "history": history, "csrf": csrf}).text
    (original,) = answers(page)
    page = http.post("/chat/regenerate", data={"task": hidden(page, "task")[0], "history": hidden(page, "history")[0],
                                               "model": "alpha", "csrf": csrf}).text
    shown = answers(page)
    assert shown[0] == original and len(shown) == 2
    winners = hidden(page, "winner")
    page = http.post("/chat/pick", data={"task": hidden(page, "task")[0], "winner": winners[1],
                                         "request_id": hidden(page, "request_id")[0],
                                         "history": hidden(page, "history")[0], "model": "alpha", "csrf": csrf}).text
    assert "Vote saved" in page
    regenerate_pick = (shown[1], shown[0])

    # 3. arena: two models, names hidden until the vote
    page = http.post("/chat/send", data={"model": "arena", "message": "Once upon a time", "history": "[]", "csrf": csrf}).text
    arena = answers(page)
    assert len(arena) == 2 and "alpha" not in page and "beta" not in page  # names hidden
    page = http.post("/chat/pick", data={"task": hidden(page, "task")[0], "winner": hidden(page, "winner")[0],
                                         "request_id": hidden(page, "request_id")[0],
                                         "history": hidden(page, "history")[0], "model": "arena", "csrf": csrf}).text
    assert "Vote saved" in page and "alpha" in page and "beta" in page  # revealed after the vote
    arena_pick = (arena[0], arena[1])

    # the export holds exactly these labels
    db = str(tmp / "feedback.db")
    export.run(LabelExportConfig(db=db, project="chat-thumbs", format="binary", out=str(tmp / "thumbs.jsonl")))
    export.run(LabelExportConfig(db=db, project="chat-pairs", format="comparisons", out=str(tmp / "pairs.jsonl")))
    thumbs_rows = [json.loads(line) for line in (tmp / "thumbs.jsonl").read_text().splitlines()]
    pair_rows = [json.loads(line) for line in (tmp / "pairs.jsonl").read_text().splitlines()]
    assert [(r["completion"], r["label"]) for r in thumbs_rows] == [(first_answer, False)]
    assert sorted((r["chosen"], r["rejected"]) for r in pair_rows) == sorted([regenerate_pick, arena_pick])

    sessions = open_store(db)
    with sessions() as s:
        labels = s.query(Label).all()
        assert sorted(lab.outcome for lab in labels) == ["thumbs", "win", "win"]
        assert [lab.reason for lab in labels if lab.outcome == "thumbs"] == ["it rambles"]
        sources = {r.text: r.source for r in s.query(Response).all()}
    assert sources[first_answer] == paths["alpha"]
    assert sorted(sources[t] for t in arena) == sorted(paths.values())  # each arena answer names its model


def test_chat_rejects_forged_requests_and_an_unknown_model(chat_server):
    srv, _, _ = chat_server
    base = srv.url.removesuffix("/v1")
    csrf = hidden(httpx.get(f"{base}/chat").text, "csrf")[0]
    r = httpx.post(f"{base}/chat/send", data={"model": "alpha", "message": "hi", "history": "{not json", "csrf": csrf})
    assert r.status_code == 400 and r.json()["error"]["message"]
    r = httpx.post(f"{base}/chat/send", data={"model": "gamma", "message": "hi", "history": "[]", "csrf": csrf})
    assert r.status_code == 404
    for token in ("", "0" * 64):  # another site's form cannot know the token
        r = httpx.post(f"{base}/chat/send", data={"model": "alpha", "message": "hi", "history": "[]", "csrf": token})
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf"


def test_the_chat_page_has_an_icon(tmp_path):
    """Issue 27 item 8: a favicon 404 on the chat page (its routes on a bare app, no model needed)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from rlhf.feedback.store import open_store
    from rlhf.serve.chat import mount_chat

    async def generate(served, conversation, temperature, seed) -> str:
        return "hello"

    app = FastAPI()
    mount_chat(app, {"alpha": object()}, open_store(str(tmp_path / "feedback.db")), "chat", generate)
    client = TestClient(app)
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert '<link rel="icon" href="/favicon.ico"' in client.get("/chat").text
