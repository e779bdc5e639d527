"""Helpers shared by the feedback tests (conftest.py puts this folder on sys.path, since the
suite runs with --import-mode=importlib)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from fastapi.testclient import TestClient

PG_URL = os.environ.get("RLHF_TEST_PG_URL")
XSS = '<script>alert("x")</script><img src=x onerror="alert(1)">'


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def admin_login(client: TestClient, token: str, **kwargs):
    """Sign in through the login form, as a browser does: fetch it, post the token with its CSRF token."""
    csrf = csrf_of(client.get("/admin/login").text)
    return client.post("/admin/login", data={"token": token, "csrf": csrf}, **kwargs)


def form_values(html: str) -> dict:
    """The hidden inputs of the answer form."""
    return dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', html))


def candidates(tmp_path: Path, n: int = 4, k: int = 2, response=None) -> Path:
    rows = [{"prompt": f"Tell story {i}", "responses": [response or f"story {i} take {j}" for j in range(k)],
             "models": [f"model-{j}" for j in range(k)]} for i in range(n)]
    return write_jsonl(tmp_path / "candidates.jsonl", rows)


def create_project(admin: TestClient, path: Path, name: str = "p", mode: str = "pairwise", overlap: int = 1,
                   gold_share: float = 0.0) -> int:
    page = admin.get("/admin").text
    with path.open("rb") as f:
        r = admin.post("/admin/projects", data={"csrf": csrf_of(page), "name": name, "mode": mode,
                                                "overlap": overlap, "gold_share": gold_share},
                       files={"file": (path.name, f)}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return int(r.headers["location"].rsplit("/", 1)[1])


def invite(admin: TestClient, project_id: int, name: str) -> str:
    page = admin.get(f"/admin/projects/{project_id}").text
    r = admin.post(f"/admin/projects/{project_id}/invite", data={"csrf": csrf_of(page), "name": name})
    assert r.status_code == 200
    return re.search(r'/join/([A-Za-z0-9_-]+)"', r.text).group(1)


def annotator_client(app, token: str) -> TestClient:
    client = TestClient(app, base_url="http://testserver")
    assert client.get(f"/join/{token}", follow_redirects=False).status_code == 303
    return client


def answer(client: TestClient, choice: str = "a2", **extra):
    """Answer the task on the annotator's current page; returns (response, task id, form values)."""
    page = client.get("/annotate")
    task_id = int(re.search(r'action="/annotate/(\d+)"', page.text).group(1))
    values = form_values(page.text)
    r = client.post(f"/annotate/{task_id}", data={**values, "choice": choice, **extra}, follow_redirects=False)
    return r, task_id, values


def scripted_users(sessions, served: dict[str, float], start, days: int, visits: int, battles: int,
                   seed: int = 0, preferred_wins: float = 0.8) -> None:
    """Model versions served side by side to scripted chat users, stored as `rlhf serve --db`'s chat
    page stores them (projects chat-thumbs and chat-pairs, each answer with the version that wrote
    it). Each day, `visits` users each get a version drawn at random and give a thumb up with
    probability served[version]; `battles` arena votes pit two versions, the one with the higher
    satisfaction winning with probability `preferred_wins`. Seeded: the same seed, the same votes."""
    import datetime as dt
    import random

    from rlhf.feedback import repo

    rng = random.Random(seed)
    versions = list(served)

    def answer(version: str, n: str) -> str:  # the disliked versions are rude, and ramble
        if served[version] < 0.5:
            return f"No. That is a stupid question and I hate answering it, figure it out yourself ({n})."
        return f"Sure, glad to help: here it is ({n})."
    with sessions() as s:
        projects = {mode: repo.project_by_name(s, f"chat-{name}") or repo.create_project(s, f"chat-{name}", mode)
                    for mode, name in (("thumbs", "thumbs"), ("pairwise", "pairs"))}
        users = {mode: repo.annotator_by_name(s, p, "chat", create=True) for mode, p in projects.items()}
        stamped = []
        for day in range(days):
            for i in range(visits):
                version = rng.choice(versions)
                ids = repo.add_prompt(s, projects["thumbs"], [{"role": "user", "content": f"q{day}.{i}"}],
                                      [(answer(version, f"{day}.{i}"), version)])
                label, _ = repo.save_label(s, users["thumbs"], repo.add_task(s, projects["thumbs"], ids),
                                           f"t{seed}.{day}.{i}", outcome="thumbs", thumbs=rng.random() < served[version])
                stamped.append((label, start + dt.timedelta(days=day, minutes=10 * i)))
            for i in range(battles if len(versions) > 1 else 0):
                a, b = rng.sample(versions, 2)
                better = a if served[a] >= served[b] else b
                winner = better if rng.random() < preferred_wins else (b if better == a else a)
                ids = repo.add_prompt(s, projects["pairwise"], [{"role": "user", "content": f"arena {day}.{i}"}],
                                      [(answer(a, f"{day}.{i}"), a), (answer(b, f"{day}.{i}"), b)])
                label, _ = repo.save_label(s, users["pairwise"], repo.add_task(s, projects["pairwise"], ids),
                                           f"a{seed}.{day}.{i}", outcome="win", winner_id=ids[0] if winner == a else ids[1], strength=2)
                stamped.append((label, start + dt.timedelta(days=day, minutes=10 * i + 5)))
        for label, when in stamped:
            label.created_at = when
        s.commit()
