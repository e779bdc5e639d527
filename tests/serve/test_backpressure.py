"""A bounded queue (--max-queue: 429 with Retry-After beyond it) and a drained shutdown (SIGTERM
lets the requests in flight finish)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx


def test_requests_beyond_the_queue_get_429_with_retry_after(tiny_model_dir):
    from .conftest import start

    srv = start([f"tiny={tiny_model_dir}"], max_batch=1, max_queue=1, max_tokens=24)
    try:
        def ask(i: int) -> httpx.Response:
            return httpx.post(srv.url + "/chat/completions", timeout=120, json={
                "model": "tiny", "messages": [{"role": "user", "content": f"Tell me story {i}"}], "max_tokens": 24,
                "seed": i})

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(ask, range(12)))
        statuses = [a.status_code for a in answers]
        assert set(statuses) <= {200, 429} and 429 in statuses and 200 in statuses
        busy = [a for a in answers if a.status_code == 429]
        assert all(a.headers["retry-after"] == "1" and a.json()["error"]["code"] == "rate_limit_exceeded" for a in busy)
        metrics = httpx.get(srv.url.removesuffix("/v1") + "/metrics").text
        assert f'rlhf_requests_total{{endpoint="/v1/chat/completions",status="429"}} {float(len(busy))}' in metrics
    finally:
        srv.stop()


def test_sigterm_lets_a_running_stream_finish(tiny_model_dir, tmp_path):
    from .conftest import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rlhf", "serve", "--model", f"tiny={tiny_model_dir}", "--port",
                             str(port), "--drain-timeout", "30", "--engine", "serial"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline and proc.poll() is None, "rlhf serve did not start"
            time.sleep(0.2)
        lines, started = [], threading.Event()

        def stream():
            with httpx.stream("POST", base + "/v1/completions", timeout=120, json={
                    "model": "tiny", "prompt": "Once upon a time", "max_tokens": 400, "stream": True,
                    "temperature": 1.0, "seed": 1}) as answer:
                for line in answer.iter_lines():
                    if line:
                        lines.append(line)
                        started.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(60)
        os.kill(proc.pid, signal.SIGTERM)
        reader.join(60)
        assert proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has drained
        assert lines[-1] == "data: [DONE]"  # the stream in flight was finished, not cut
        finishes = [json.loads(x[6:])["choices"][0]["finish_reason"] for x in lines[:-1]]
        assert finishes[-1] in ("stop", "length")
    finally:
        if proc.poll() is None:
            proc.kill()
