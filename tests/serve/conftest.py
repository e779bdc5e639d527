"""`rlhf serve` on loopback (in-process uvicorn in a thread, a free port) with two tiny policies."""

from __future__ import annotations

import socket
import threading
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running `rlhf serve` app: `.url` (ends in /v1), `.app`; `stop()` shuts it down."""

    def __init__(self, cfg):
        import uvicorn

        from rlhf.serve.server import build_app

        self.app = build_app(cfg)
        self.url = f"http://127.0.0.1:{cfg.port}/v1"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=cfg.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("rlhf serve did not start")
            time.sleep(0.05)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        for served in self.app.state.models.values():
            served.engine.close()


def start(model_dirs, **overrides) -> Server:
    from rlhf.config import ServeConfig

    return Server(ServeConfig(model=tuple(model_dirs), port=free_port(), **overrides))


@pytest.fixture(scope="session")
def server(tiny_model_dir):
    """Two policies: the tiny model as `tiny` and, under another name, as `tiny-b`."""
    srv = start([f"tiny={tiny_model_dir}", f"tiny-b={tiny_model_dir}"], max_tokens=24)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)
