"""SIGKILL of `rlhf serve --db sqlite:///...` (a real process) while 32 streams run and three
signed-in people give chat feedback: after a restart on the same database every feedback POST that
was answered 2xx is in the store (each one's request id, read back through the store's tables and
its export). `chat_client` and `give_feedback` are all this test knows of the chat page."""

from __future__ import annotations

import html
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

STREAMS = 32
POSTERS = 3


def start_server(model: Path, db_url: str, port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "rlhf.cli", "serve", "--model", f"tiny={model}", "--db", db_url,
                             "--port", str(port), "--max-tokens", "6", "--threads", "1"],
                            stdout=log.open("a"), stderr=subprocess.STDOUT)
    deadline = time.time() + 90
    while time.time() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("rlhf serve did not start: " + log.read_text()[-3000:])


def hidden(page: str, name: str) -> list[str]:
    return [html.unescape(v) for v in re.findall(rf'name="{name}" value="([^"]*)"', page)]


def form(page: str, action: str) -> dict:
    """The hidden fields of the (first) form of `page` posting to `action`."""
    body = re.search(rf'<form method="post" action="{action}"[^>]*>(.*?)</form>', page, re.S).group(1)
    return {k: html.unescape(v) for k, v in re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', body)}


def chat_client(base: str, db_url: str, name: str) -> httpx.Client:
    """A person signed in to the chat page: invited as an operator invites (`rlhf label invite NAME
    --chat`), their link opened (it sets the sign-in cookie)."""
    from rlhf.config.feedback import LabelInviteConfig
    from rlhf.feedback.chat_access import invite_link

    link, _ = invite_link(LabelInviteConfig(name=name, db=db_url, chat=True, url=base))
    http = httpx.Client(base_url=base, timeout=60, follow_redirects=True)
    assert http.get(link.removeprefix(base)).status_code == 200
    return http


def give_feedback(http: httpx.Client, message: str, answered: list[str]) -> None:
    """One conversation's feedback through the chat page's forms: send, thumbs down with a reason,
    regenerate, pick the second answer. The request id of each feedback POST answered 2xx goes
    into `answered` as soon as its answer arrives."""
    home = http.get("/chat").raise_for_status().text
    sent = http.post("/chat/send", data={**form(home, "/chat/send"), "model": "tiny", "message": message})
    sent = sent.raise_for_status().text
    thumbs = {**form(sent, "/chat/thumbs"), "up": "0", "reason": message}
    if http.post("/chat/thumbs", data=thumbs).is_success:
        answered.append(thumbs["request_id"])
    pair = http.post("/chat/regenerate", data=form(sent, "/chat/regenerate")).raise_for_status().text
    pick = {**form(pair, "/chat/pick"), "winner": hidden(pair, "winner")[1]}
    if http.post("/chat/pick", data=pick).is_success:
        answered.append(pick["request_id"])


def test_every_acknowledged_feedback_survives_a_sigkill(tiny_model_dir, tmp_path):
    from rlhf.config import LabelExportConfig
    from rlhf.feedback import export
    from rlhf.feedback.store import open_store
    from rlhf.feedback.tables import Label

    from .conftest import free_port

    db_url, log = f"sqlite:///{tmp_path / 'feedback.db'}", tmp_path / "serve.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(tiny_model_dir, db_url, port, log)
    stop = threading.Event()
    streaming = [False] * STREAMS  # client i is inside a stream and has had its first event
    answered: list[str] = []
    failures: list[str] = []

    def stream(i: int) -> None:
        body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 400, "temperature": 1.0, "stream": True,
                "seed": i}
        try:
            while not stop.is_set():
                with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=60) as answer:
                    answer.raise_for_status()
                    for line in answer.iter_lines():
                        streaming[i] = streaming[i] or line.startswith("data: {")
                streaming[i] = False
        except httpx.TransportError:
            streaming[i] = False  # the server is gone
        except Exception as err:  # anything else fails the test
            failures.append(f"stream {i}: {err!r}")

    def post(i: int) -> None:
        try:
            http = people[i]
            k = 0
            while not stop.is_set():
                give_feedback(http, f"poster {i} message {k}", answered)
                k += 1
        except httpx.TransportError:
            pass  # the server is gone
        except Exception as err:
            failures.append(f"poster {i}: {err!r}")

    people = [chat_client(base, db_url, f"person {i}") for i in range(POSTERS)]  # invited one after another
    threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(STREAMS)]
    threads += [threading.Thread(target=post, args=(i,), daemon=True) for i in range(POSTERS)]
    for t in threads:
        t.start()
    try:
        deadline = time.time() + 60
        while not (all(streaming) and len(answered) >= 6):  # all 32 streams mid-answer, feedback flowing
            assert time.time() < deadline and not failures, (f"{sum(streaming)} streams, {len(answered)} feedback",
                                                             failures, log.read_text()[-2000:])
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        stop.set()
        proc.kill()
        for t in threads:
            t.join(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not failures, failures
    acknowledged = list(answered)  # every 2xx came before the kill; the threads have put theirs in

    again = start_server(tiny_model_dir, db_url, port, log)  # the same database, as an operator restarts it
    try:
        after: list[str] = []
        give_feedback(chat_client(base, db_url, "after"), "after the restart", after)
        assert len(after) == 2  # the restarted server takes feedback again
    finally:
        again.terminate()
        again.wait(timeout=30)

    sessions = open_store(db_url)
    with sessions() as s:
        stored = {request_id for (request_id,) in s.query(Label.request_id)}
    missing = [r for r in acknowledged if r not in stored]
    print(f"SIGKILL with {STREAMS} streams mid-answer: {len(acknowledged)} acknowledged feedback POSTs, "
          f"{len(stored)} labels stored, {len(missing)} missing")
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged feedback POSTs were lost"
    out = tmp_path / "thumbs.jsonl"
    export.run(LabelExportConfig(db=db_url, project="chat-thumbs", format="binary", out=str(out)))
    thumbs = [line for line in out.read_text().splitlines() if line]
    assert len(thumbs) >= (len(acknowledged) + 1) // 2 + 1  # the thumbs among them, and the one after the restart


def test_the_first_feedbacks_at_once_are_all_stored(tmp_path):
    """Eight people sending their first message at the same moment all get 200 and all their
    answers are stored (the chat's projects exist before the first request: each first post used
    to create them itself, and all but one failed the UNIQUE constraint with a 500)."""
    import asyncio

    from fastapi import FastAPI

    from rlhf.feedback import chat_access, repo
    from rlhf.feedback.store import open_store
    from rlhf.feedback.tables import Prompt
    from rlhf.serve.chat import mount_chat

    async def generate(served, conversation, temperature, seed) -> str:
        return "hello"

    class Served:
        path = "models/alpha"

    sessions = open_store(str(tmp_path / "feedback.db"))
    app = FastAPI()
    mount_chat(app, {"alpha": Served()}, sessions, "chat", generate)
    with sessions() as s:
        assert repo.project_by_name(s, "chat-thumbs") and repo.project_by_name(s, "chat-pairs")
        tokens = [chat_access.invite_to_chat(s, "chat", f"person {i}") for i in range(8)]
        s.commit()

    async def first_messages() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            answers = await asyncio.gather(*(http.post("/chat/send", headers={"authorization": f"Bearer {token}"},
                                                       data={"model": "alpha", "message": "hi", "history": "[]"})
                                             for token in tokens))
            return [a.status_code for a in answers]

    assert asyncio.run(first_messages()) == [200] * 8
    with sessions() as s:
        assert s.query(Prompt).count() == 8
