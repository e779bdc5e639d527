"""The chat page of `rlhf serve --db`: an invited person signs in by link, chats, gives a thumbs
down with a reason, uses regenerate and picks an answer, votes in the arena; `rlhf label export`
then holds exactly those labels, each with its author and the models that wrote the responses.
Without a sign-in, or with a missing or forged CSRF token, every chat form is refused and nothing
is stored. Driven with plain form posts (the page works without JavaScript); most tests run the
chat routes on a bare app with a scripted model (no weights to load)."""

from __future__ import annotations

import html
import json
import re
import shutil
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from rlhf.config.feedback import LabelInviteConfig
from rlhf.feedback import chat_access, repo
from rlhf.feedback.security import hash_token
from rlhf.feedback.store import open_store
from rlhf.feedback.tables import Annotator, Label, Project, Prompt
from rlhf.serve.chat import mount_chat

FORMS = ("/chat/send", "/chat/thumbs", "/chat/regenerate", "/chat/pick", "/chat/signout")


def hidden(page: str, name: str) -> list[str]:
    return [html.unescape(v) for v in re.findall(rf'name="{name}" value="([^"]*)"', page)]


def answers(page: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r'<article class="response"[^>]*>\s*<h3[^>]*>[^<]*</h3>\s*'
                                                 r'<div class="text">(.*?)</div>', page, re.S)]


def form(page: str, action: str) -> dict:
    """The hidden fields of the form posting to `action` (the first one, for the pick forms)."""
    body = re.search(rf'<form method="post" action="{action}"[^>]*>(.*?)</form>', page, re.S).group(1)
    return {k: html.unescape(v) for k, v in re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', body)}


def invite(db: str, name: str, url: str = "http://testserver") -> str:
    """The path of `name`'s chat invite link, made as an operator makes it (`rlhf label invite --chat`)."""
    link, _ = chat_access.invite_link(LabelInviteConfig(name=name, db=db, chat=True, url=url))
    return link.removeprefix(url)


def counts(sessions) -> dict:
    with sessions() as s:
        return {table.__name__: s.query(table).count() for table in (Prompt, Label)}


@pytest.fixture
def bare(tmp_path):
    """The chat routes on a bare app, with two scripted models whose answers count up."""
    said = iter(range(10**6))

    async def generate(served, conversation, temperature, seed) -> str:
        return f"{served.path} answer {next(said)} to {conversation[-1]['content']}"

    db = str(tmp_path / "feedback.db")
    sessions = open_store(db)
    app = FastAPI()
    models = {"alpha": SimpleNamespace(path="/models/alpha"), "beta": SimpleNamespace(path="/models/beta")}
    mount_chat(app, models, sessions, "chat", generate)
    return SimpleNamespace(app=app, db=db, sessions=sessions)


def signed_in(bare, name: str) -> TestClient:
    client = TestClient(bare.app)
    assert client.get(invite(bare.db, name)).status_code == 200  # the link sets the cookie and opens /chat
    return client


def one_of_each_form(client: TestClient) -> dict[str, dict]:
    """A filled-in, valid form of every chat action (an answer to rate and a pair to pick from)."""
    home = client.get("/chat").text
    sent = client.post("/chat/send", data={**form(home, "/chat/send"), "model": "alpha", "message": "hi"}).text
    pair = client.post("/chat/regenerate", data=form(sent, "/chat/regenerate")).text
    return {"/chat/send": {**form(home, "/chat/send"), "model": "alpha", "message": "hello"},
            "/chat/thumbs": {**form(sent, "/chat/thumbs"), "up": "1", "reason": ""},
            "/chat/regenerate": form(sent, "/chat/regenerate"),
            "/chat/pick": form(pair, "/chat/pick"),
            "/chat/signout": form(home, "/chat/signout")}


def test_without_sign_in_the_chat_refuses_and_stores_nothing(bare):
    forms = one_of_each_form(signed_in(bare, "alice"))
    before = counts(bare.sessions)
    anonymous = TestClient(bare.app)
    page = anonymous.get("/chat")
    assert page.status_code == 401 and "Sign in to chat" in page.text and "rlhf label invite NAME --chat" in page.text
    assert '<link rel="stylesheet" href="/static/style.css">' in page.text  # the labelling app's look
    for action, fields in forms.items():
        r = anonymous.post(action, data=fields)
        assert r.status_code == 401 and "invite link" in r.text, action
    assert anonymous.get("/chat/join/not-a-token").status_code == 403
    with bare.sessions() as s:  # an annotator of a labelling project is no chat user
        token = repo.invite(s, repo.create_project(s, "stories", "pairwise"), "mallory")
        s.commit()
    assert anonymous.get(f"/chat/join/{token}").status_code == 403
    outsider = TestClient(bare.app, cookies={"rlhf_chat": token})
    assert outsider.post("/chat/thumbs", data=forms["/chat/thumbs"]).status_code == 401
    assert counts(bare.sessions) == before


def test_every_chat_form_refuses_a_missing_or_forged_csrf_token(bare):
    alice = signed_in(bare, "alice")
    forms = one_of_each_form(alice)
    bob_csrf = hidden(signed_in(bare, "bob").get("/chat").text, "csrf")[0]
    before = counts(bare.sessions)
    for action, fields in forms.items():
        for forged in ("", "0" * 64, bob_csrf):  # another site's form cannot know alice's token
            r = alice.post(action, data={**fields, "csrf": forged})
            assert r.status_code == 403 and "CSRF" in r.text, (action, forged)
        without = {k: v for k, v in fields.items() if k != "csrf"}
        assert alice.post(action, data=without).status_code == 403, action
    r = alice.post("/chat/send", data={**forms["/chat/send"], "csrf": ""}, headers={"accept": "application/json"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf"
    assert counts(bare.sessions) == before
    assert alice.post("/chat/thumbs", data=forms["/chat/thumbs"]).status_code == 200  # the real token still works
    # a script signed in by its Bearer header needs no CSRF token: a browser never sends that header on its own
    token = invite(bare.db, "script").rsplit("/", 1)[1]
    script = TestClient(bare.app, headers={"authorization": f"Bearer {token}"})
    sent = script.post("/chat/send", data={"model": "beta", "message": "hi", "history": "[]"})
    assert sent.status_code == 200 and "Signed in as script" in sent.text


def test_nobody_reads_or_rates_another_persons_answer(bare):
    alice_forms = one_of_each_form(signed_in(bare, "alice"))
    bob = signed_in(bare, "bob")
    bob_csrf = hidden(bob.get("/chat").text, "csrf")[0]
    before = counts(bare.sessions)
    for action in ("/chat/thumbs", "/chat/regenerate", "/chat/pick"):
        r = bob.post(action, data={**alice_forms[action], "csrf": bob_csrf})
        assert r.status_code == 403 and "not one of your answers" in r.text, action
    assert counts(bare.sessions) == before


def test_signed_in_feedback_has_its_author_in_the_labelling_apps_views(bare):
    from rlhf.feedback.app import create_app
    from rlhf.feedback.dashboard import build

    for name, up in (("alice", "0"), ("bob", "1")):
        client = signed_in(bare, name)
        forms = one_of_each_form(client)
        assert f"Signed in as {name}" in client.get("/chat").text
        assert "feedback saved" in client.post("/chat/thumbs", data={**forms["/chat/thumbs"], "up": up}).text
        assert "Vote saved" in client.post("/chat/pick", data=forms["/chat/pick"]).text
        signed_out = client.post("/chat/signout", data=forms["/chat/signout"])
        assert signed_out.status_code == 200 and "signed out" in signed_out.text
        assert client.get("/chat").status_code == 401
    with bare.sessions() as s:
        authors = {(s.get(Project, s.get(Annotator, lab.annotator_id).project_id).name,
                    s.get(Annotator, lab.annotator_id).name, lab.outcome) for lab in s.query(Label)}
        assert authors == {(p, n, o) for n in ("alice", "bob")
                           for p, o in (("chat-thumbs", "thumbs"), ("chat-pairs", "win"))}
        thumbs = build(s, repo.project_by_name(s, "chat-thumbs"), rounds=0)
        assert {(a["name"], a["labels"]) for a in thumbs.annotators} == {("alice", 1), ("bob", 1)}
        admin_token = repo.issue_admin_token(s)
        project_id = repo.project_by_name(s, "chat-pairs").id
    labelling = TestClient(create_app(bare.sessions), headers={"authorization": f"Bearer {admin_token}"})
    dashboard = labelling.get(f"/admin/projects/{project_id}/dashboard").text
    assert re.search(r"<tr><td>alice</td><td>1</td>", dashboard) and re.search(r"<tr><td>bob</td><td>1</td>", dashboard)
    invited = labelling.post(f"/admin/projects/{project_id}/invite", data={"name": "erin"}).text  # the admin page's way
    path = re.search(r'value="(/chat/join/[^"]+)" id="chat-invite-path"', invited).group(1)
    assert "Signed in as erin" in TestClient(bare.app).get(path).text


def test_label_invite_prints_a_link_once_and_a_new_one_replaces_it(bare, capsys):
    from rlhf.cli import main

    assert main(["label", "invite", "carol", "--chat", "--db", bare.db, "--url", "http://chat.example:8000"]) == 0
    first = re.search(r"http://chat\.example:8000(/chat/join/\S+)", capsys.readouterr().out).group(1)
    client = TestClient(bare.app)
    assert "Signed in as carol" in client.get(first).text
    second = invite(bare.db, "carol")
    assert TestClient(bare.app).get(first).status_code == 403  # the old link stopped working
    assert client.get("/chat").status_code == 401 and "Signed in as carol" in TestClient(bare.app).get(second).text
    token = second.rsplit("/", 1)[1]
    with bare.sessions() as s:  # only hashes are stored
        stored = {a.token_hash for a in s.query(Annotator)}
    assert hash_token(token) in stored and token not in stored
    assert main(["label", "invite", "dave", "--db", bare.db, "--project", "missing"]) == 1  # no such labelling project
    assert "no labelling project 'missing'" in capsys.readouterr().err


def test_chat_refuses_a_malformed_conversation_and_an_unknown_model(bare):
    alice = signed_in(bare, "alice")
    fields = form(alice.get("/chat").text, "/chat/send")
    r = alice.post("/chat/send", data={**fields, "model": "alpha", "message": "hi", "history": "{not json"})
    assert r.status_code == 400 and "malformed" in r.text
    assert alice.post("/chat/send", data={**fields, "model": "gamma", "message": "hi"}).status_code == 404


def test_a_conversation_over_the_context_says_to_start_a_new_one_and_stores_nothing(tmp_path):
    """A person who kept one conversation going past the model's context got "Error 400: the
    conversation is longer than the model's context" with no way forward but the brand link."""
    from rlhf.serve.protocol import ApiError

    async def generate(served, conversation, temperature, seed) -> str:
        if len(conversation) > 1:
            raise ApiError(400, "the conversation is longer than the model's context", code="context_length_exceeded")
        return "once upon a time"

    db = str(tmp_path / "feedback.db")
    app, sessions = FastAPI(), open_store(db)
    mount_chat(app, {"alpha": SimpleNamespace(path="/models/alpha", context=512)}, sessions, "chat", generate)
    alice = signed_in(SimpleNamespace(app=app, db=db), "alice")
    first = alice.post("/chat/send", data={**form(alice.get("/chat").text, "/chat/send"), "model": "alpha", "message": "hi"})
    assert first.status_code == 200 and '<a href="/chat">New conversation</a>' in first.text
    before = counts(sessions)
    again = alice.post("/chat/send", data={**form(first.text, "/chat/send"), "model": "alpha", "message": "and then?"})
    assert again.status_code == 400 and "(512 tokens): start a new conversation" in again.text
    assert '<a href="/chat">' in again.text and counts(sessions) == before


def test_the_chat_page_has_an_icon_and_the_labelling_stylesheet(bare):
    """Issue 27 item 8: a favicon 404 on the chat page; issue 29: the labelling app's look."""
    client = TestClient(bare.app)
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert '<link rel="icon" href="/favicon.ico"' in client.get("/chat").text
    from rlhf.feedback.web import HERE

    css = client.get("/static/style.css")
    assert css.status_code == 200 and css.text == (HERE / "static" / "style.css").read_text()
    assert client.get("/static/keys.js").status_code == 200


@pytest.fixture(scope="module")
def chat_server(tiny_model_dir, tmp_path_factory):
    from .conftest import start

    tmp = tmp_path_factory.mktemp("chat")
    second = shutil.copytree(tiny_model_dir, tmp / "policy-b")
    srv = start([f"alpha={tiny_model_dir}", f"beta={second}"], db=str(tmp / "feedback.db"), max_tokens=12)
    yield srv, tmp, {"alpha": str(tiny_model_dir), "beta": str(second)}
    srv.stop()


def test_chat_feedback_is_exported_with_its_models_and_author(chat_server):
    from rlhf.config import LabelExportConfig
    from rlhf.feedback import export
    from rlhf.feedback.tables import Response

    srv, tmp, paths = chat_server
    base = srv.url.removesuffix("/v1")
    db = str(tmp / "feedback.db")
    link = invite(db, "alice", base)
    assert httpx.get(f"{base}/chat").status_code == 401
    http = httpx.Client(base_url=base, timeout=60, follow_redirects=True)
    home = http.get(link)
    assert home.status_code == 200 and "Signed in as alice" in home.text and "<form" in home.text
    assert "http" not in home.text  # no external assets
    assert home.headers["content-security-policy"].startswith("default-src 'self'")

    # 1. chat, thumbs down with a reason
    page = http.post("/chat/send", data={**form(home.text, "/chat/send"), "model": "alpha",
                                         "message": "Tell me about the cat."}).text
    (first_answer,) = answers(page)
    thumbs = {**form(page, "/chat/thumbs"), "up": "0", "reason": "it rambles"}
    assert json.loads(thumbs["history"]) == [{"role": "user", "content": "Tell me about the cat."}]
    assert "feedback saved" in http.post("/chat/thumbs", data=thumbs).text
    assert http.post("/chat/thumbs", data=thumbs).status_code == 200  # a resent form stores nothing twice

    # 2. a second message, regenerate, pick the second answer
    history = json.dumps([{"role": "user", "content": "Tell me about the cat."},
                          {"role": "assistant", "content": first_answer}])
    page = http.post("/chat/send", data={**form(home.text, "/chat/send"), "model": "alpha", "message": "And the dog?",
                                         "history": history}).text
    (original,) = answers(page)
    page = http.post("/chat/regenerate", data=form(page, "/chat/regenerate")).text
    shown = answers(page)
    assert shown[0] == original and len(shown) == 2
    pick = {**form(page, "/chat/pick"), "winner": hidden(page, "winner")[1]}
    assert "Vote saved" in http.post("/chat/pick", data=pick).text
    regenerate_pick = (shown[1], shown[0])

    # 3. arena: two models, names hidden until the vote
    page = http.post("/chat/send", data={**form(home.text, "/chat/send"), "model": "arena",
                                         "message": "Once upon a time"}).text
    arena = answers(page)
    assert len(arena) == 2 and "alpha" not in page and "beta" not in page  # names hidden
    page = http.post("/chat/pick", data=form(page, "/chat/pick")).text
    notice = html.unescape(re.search(r'<p class="notice"[^>]*>(.*?)</p>', page).group(1))
    assert "Vote saved" in notice and "alpha" in notice and "beta" in notice  # revealed after the vote
    arena_pick = (arena[0], arena[1])

    # the export holds exactly these labels, each by alice; no token in the access log or /metrics
    export.run(LabelExportConfig(db=db, project="chat-thumbs", format="binary", out=str(tmp / "thumbs.jsonl")))
    export.run(LabelExportConfig(db=db, project="chat-pairs", format="comparisons", out=str(tmp / "pairs.jsonl")))
    thumbs_rows = [json.loads(line) for line in (tmp / "thumbs.jsonl").read_text().splitlines()]
    pair_rows = [json.loads(line) for line in (tmp / "pairs.jsonl").read_text().splitlines()]
    assert [(r["completion"], r["label"]) for r in thumbs_rows] == [(first_answer, False)]
    assert sorted((r["chosen"], r["rejected"]) for r in pair_rows) == sorted([regenerate_pick, arena_pick])
    metrics = httpx.get(f"{base}/metrics").text
    assert link.rsplit("/", 1)[1] not in metrics and 'endpoint="/chat/join/<token>"' in metrics

    sessions = open_store(db)
    with sessions() as s:
        labels = s.query(Label).all()
        assert sorted(lab.outcome for lab in labels) == ["thumbs", "win", "win"]
        assert {s.get(Annotator, lab.annotator_id).name for lab in labels} == {"alice"}
        assert [lab.reason for lab in labels if lab.outcome == "thumbs"] == ["it rambles"]
        sources = {r.text: r.source for r in s.query(Response).all()}
    assert sources[first_answer] == paths["alpha"]
    assert sorted(sources[t] for t in arena) == sorted(paths.values())  # each arena answer names its model
