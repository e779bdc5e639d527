"""`GET /metrics` (Prometheus text): its counts agree with what the client itself saw."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of the server's /metrics."""
    answer = httpx.get(url.removesuffix("/v1") + "/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(metrics: dict, name: str, **labels) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_agree_with_the_client(server, client):
    before = scrape(server.url)
    tokens = 0
    for i in range(3):
        answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": f"Hi {i}"}],
                                                max_tokens=6, n=2, seed=i)
        tokens += answer.usage.completion_tokens
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=5,
                                            stream=True, stream_options={"include_usage": True})
    tokens += [chunk for chunk in stream][-1].usage.completion_tokens
    missing = httpx.post(server.url + "/chat/completions", json={"model": "nope", "messages": []})
    assert missing.status_code in (400, 404)
    after = scrape(server.url)

    def grew(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("rlhf_requests_total", endpoint="/v1/chat/completions", status="200") == 4
    assert grew("rlhf_requests_total", endpoint="/v1/chat/completions", status=str(missing.status_code)) == 1
    assert grew("rlhf_generation_tokens_total", model="tiny") == tokens
    finished = sum(grew("rlhf_request_success_total", model="tiny", finish=f) for f in ("stop", "length"))
    assert finished == 7  # 3 requests x n=2, and the stream
    assert grew("rlhf_time_to_first_token_seconds_count", model="tiny") == 7
    assert grew("rlhf_time_to_first_token_seconds_sum", model="tiny") > 0
    assert value(after, "rlhf_num_requests_running", model="tiny") == 0  # nothing in flight once all answered
    assert value(after, "rlhf_num_requests_waiting", model="tiny") == 0


def test_each_request_is_one_json_access_line_without_its_prompt(server, client, caplog):
    import json
    import logging

    with caplog.at_level(logging.INFO, logger="rlhf.serve.access"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "secret prompt 7731"}],
                                       max_tokens=2)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "rlhf.serve.access"]
    assert {"method": "POST", "path": "/v1/chat/completions", "status": 200} in [
        {k: line[k] for k in ("method", "path", "status")} for line in lines]
    assert all(line["ms"] >= 0 for line in lines) and "7731" not in caplog.text
