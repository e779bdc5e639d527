"""A client that goes away stops its generation; a request past --request-timeout is stopped (504)."""

from __future__ import annotations

import time

import httpx
import pytest

from rlhf.resources import BASE_MODEL


@pytest.fixture(scope="module")
def slow():
    """The shipped base model: slow enough on a CPU that 400 tokens take seconds."""
    from .conftest import start

    srv = start([f"base={BASE_MODEL}"], max_batch=4, request_timeout=30)
    yield srv
    srv.stop()


def scrape(url: str, name: str) -> float:
    text = httpx.get(url.removesuffix("/v1") + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def ask(url: str, timeout: float, **extra) -> httpx.Response:
    return httpx.post(url + "/completions", timeout=timeout, json={
        "model": "base", "prompt": "Once upon a time", "max_tokens": 400, "temperature": 1.0, "seed": 3,
        "stop": [], **extra})


def test_a_client_that_leaves_frees_its_decode_slot(slow):
    t = time.perf_counter()
    full = ask(slow.url, 120)
    whole = time.perf_counter() - t
    assert full.status_code == 200 and full.json()["usage"]["completion_tokens"] >= 100
    before = scrape(slow.url, 'rlhf_requests_cancelled_total{model="base",reason="disconnect"}')
    with pytest.raises(httpx.ReadTimeout):
        ask(slow.url, whole / 10)  # the client gives up long before the answer is ready
    deadline = time.time() + whole / 2
    while scrape(slow.url, 'rlhf_requests_cancelled_total{model="base",reason="disconnect"}') == before:
        assert time.time() < deadline, "the generation went on after its client left"
        time.sleep(0.05)
    assert scrape(slow.url, 'rlhf_num_requests_running{model="base"}') == 0


def test_a_streaming_client_that_leaves_is_counted_and_frees_its_slot(slow):
    name = 'rlhf_requests_cancelled_total{model="base",reason="disconnect"}'
    before = scrape(slow.url, name)
    with httpx.stream("POST", slow.url + "/completions", timeout=120, json={
            "model": "base", "prompt": "Once upon a time", "max_tokens": 400, "n": 2, "seed": 1, "stream": True,
            "stop": []}) as s:
        for line in s.iter_lines():
            if '"text": "' in line and '"text": ""' not in line:
                break  # the first tokens arrived: leave
    deadline = time.time() + 30
    while scrape(slow.url, name) < before + 2:  # both sequences of n=2, stopped by their client's leaving
        assert time.time() < deadline, "a stream whose client left was not counted as cancelled"
        time.sleep(0.05)
    assert scrape(slow.url, name) == before + 2 and scrape(slow.url, 'rlhf_num_requests_running{model="base"}') == 0


def test_a_request_past_the_timeout_is_stopped(tiny_model_dir):
    from .conftest import start

    srv = start([f"base={BASE_MODEL}"], request_timeout=0.2)
    try:
        answer = ask(srv.url, 120)
        assert answer.status_code == 504 and answer.json()["error"]["code"] == "timeout"
        with httpx.stream("POST", srv.url + "/completions", timeout=120, json={
                "model": "base", "prompt": "Once upon a time", "max_tokens": 400, "stream": True, "stop": []}) as s:
            lines = [line for line in s.iter_lines() if line]
        assert '"code": "timeout"' in lines[-1]
        assert scrape(srv.url, 'rlhf_requests_cancelled_total{model="base",reason="timeout"}') == 2  # each kind once
    finally:
        srv.stop()
