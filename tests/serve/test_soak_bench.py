"""bench/serve.py --soak, in small: its clients, its memory readings and its /metrics checks
against an in-process server whose queue is small enough to answer 429 (the full soak, a real
server process for 10 minutes, is in bench/README.md)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import serve_soak  # noqa: E402


@pytest.fixture(scope="module")
def crowded(tiny_model_dir):
    """Two decode slots and one queue place: four clients meet the backpressure."""
    from .conftest import start

    srv = start([f"bench={tiny_model_dir}"], max_batch=2, max_queue=1)
    yield srv
    srv.stop()


def test_a_short_soak_agrees_with_metrics(crowded):
    args = argparse.Namespace(clients=4, duration=3.0, leave_share=0.25, warmup=0.3, max_tokens=12, sample_every=0.2)
    result = asyncio.run(serve_soak.soak(crowded.url, os.getpid(), args))
    tally = result["tally"]
    assert tally.ok > 0 and tally.left > 0 and tally.rejected > 0  # every kind of answer happened
    assert tally.server_errors == tally.dropped == tally.other == 0, tally.messages
    table, data = serve_soak.report(result, args)
    assert data["passed"], table
    checks = {c["check"]: c for c in data["checks"]}
    assert checks["answers 429"]["server"] == tally.rejected > 0
    assert checks["answers 200 (read to the end + left)"]["server"] == tally.ok + tally.left
    assert len(tally.ttfts) == tally.ok + tally.left and data["ttft_ms"]["p99"] >= data["ttft_ms"]["p50"] > 0
    assert "FAIL" not in table and "TTFT p99 ms" in table


def test_the_checks_fail_on_what_they_guard():
    before = {("rlhf_requests_total", (("endpoint", "/v1/completions"), ("status", "200"))): 5.0}
    after = {("rlhf_requests_total", (("endpoint", "/v1/completions"), ("status", "200"))): 15.0,
             ("rlhf_requests_total", (("endpoint", "/v1/completions"), ("status", "429"))): 2.0,
             ("rlhf_generation_tokens_total", (("model", "bench"),)): 100.0,
             ("rlhf_request_success_total", (("finish", "length"), ("model", "bench"))): 9.0}
    tally = serve_soak.Tally(ok=8, left=2, rejected=2, tokens=90)
    checks = serve_soak.agreement(before, after, tally, max_tokens=10)
    assert all(c["pass"] for c in checks)  # one leaver's sequence finished before it left: 10 tokens more
    assert not all(c["pass"] for c in serve_soak.agreement(before, after, serve_soak.Tally(ok=8, left=2, rejected=1,
                                                                                          tokens=90), 10))
    assert not all(c["pass"] for c in serve_soak.agreement(before, after, serve_soak.Tally(ok=8, left=2, rejected=2,
                                                                                          tokens=80), 10))
    failing = {**after, ("rlhf_requests_total", (("endpoint", "/v1/completions"), ("status", "503"))): 1.0}
    assert not next(c for c in serve_soak.agreement(before, failing, tally, 10) if c["check"] == "5xx answers")["pass"]
