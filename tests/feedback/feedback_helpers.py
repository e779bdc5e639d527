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
