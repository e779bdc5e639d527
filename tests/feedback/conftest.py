"""Fixtures for the feedback app: a fresh store per test (SQLite in a temporary directory, or
the PostgreSQL database named by RLHF_TEST_PG_URL, emptied first), and an app client signed in
as admin. Helpers live in feedback_helpers.py."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).parent))  # for `import feedback_helpers` under --import-mode=importlib

from feedback_helpers import PG_URL, admin_login  # noqa: E402

from rlhf.feedback import repo  # noqa: E402
from rlhf.feedback.app import create_app  # noqa: E402
from rlhf.feedback.store import make_engine, open_store  # noqa: E402
from rlhf.feedback.tables import Base  # noqa: E402


@pytest.fixture
def db_url(tmp_path) -> str:
    if PG_URL:
        engine = make_engine(PG_URL)
        Base.metadata.drop_all(engine)
        with engine.begin() as c:
            c.execute(text("DROP TABLE IF EXISTS alembic_version"))
        engine.dispose()
        return PG_URL
    return str(tmp_path / "feedback.db")


@pytest.fixture
def sessions(db_url):
    return open_store(db_url)


@pytest.fixture
def admin_token(sessions) -> str:
    with sessions() as s:
        return repo.issue_admin_token(s)


@pytest.fixture
def app(sessions, admin_token):
    return create_app(sessions, max_body_bytes=10 * 2**20)


@pytest.fixture
def admin(app, admin_token) -> TestClient:
    """A client signed in as admin through the login form (cookie + CSRF, as a browser)."""
    client = TestClient(app, base_url="http://testserver")
    assert admin_login(client, admin_token, follow_redirects=False).status_code == 303
    return client


@pytest.fixture
def server(app):
    """The app under uvicorn on a free loopback port, in a thread."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)
