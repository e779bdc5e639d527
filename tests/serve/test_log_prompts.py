"""`--log-prompts`: off (the default), no prompt text reaches any log; on, each request's access
line holds its messages (chat) or prompt (completions)."""

from __future__ import annotations

import json
import logging

import httpx
import pytest


def access_lines(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "rlhf.serve.access"]


def ask_both(url: str, marker: str) -> None:
    """One chat completion (streamed) and one text completion, each carrying `marker` in its prompt."""
    chat = {"model": "tiny", "messages": [{"role": "system", "content": f"be brief {marker}"},
                                          {"role": "user", "content": f"hello {marker}"}], "max_tokens": 3, "stream": True}
    with httpx.stream("POST", url + "/chat/completions", json=chat, timeout=60) as answer:
        assert answer.status_code == 200 and "[DONE]" in answer.read().decode()
    answer = httpx.post(url + "/completions", json={"model": "tiny", "prompt": f"Once {marker}", "max_tokens": 3},
                        timeout=60)
    assert answer.status_code == 200


@pytest.fixture(scope="module")
def logging_server(tiny_model_dir):
    from .conftest import start

    srv = start([f"tiny={tiny_model_dir}"], max_tokens=8, log_prompts=True)
    yield srv
    srv.stop()


def test_without_the_flag_no_prompt_reaches_the_logs(server, caplog):
    with caplog.at_level(logging.DEBUG):  # every logger, every level
        ask_both(server.url, "marker-5521")
    lines = access_lines(caplog)
    assert {line["path"] for line in lines} >= {"/v1/chat/completions", "/v1/completions"}
    assert "5521" not in caplog.text and all("messages" not in line and "prompt" not in line for line in lines)


def test_with_log_prompts_the_access_line_holds_the_messages(logging_server, caplog):
    with caplog.at_level(logging.INFO, logger="rlhf.serve.access"):
        ask_both(logging_server.url, "marker-9034")
        bad = httpx.post(logging_server.url + "/completions", json={"model": "nope", "prompt": "lost marker-9034"})
    assert bad.status_code == 404
    by_path = {}
    for line in access_lines(caplog):
        by_path.setdefault((line["path"], line["status"]), []).append(line)
    (chat,) = by_path[("/v1/chat/completions", 200)]
    assert chat["messages"] == [{"role": "system", "content": "be brief marker-9034"},
                                {"role": "user", "content": "hello marker-9034"}]
    (text,) = by_path[("/v1/completions", 200)]
    assert text["prompt"] == "Once marker-9034" and "messages" not in text
    (refused,) = by_path[("/v1/completions", 404)]  # a refused request is logged with its prompt too
    assert refused["prompt"] == "lost marker-9034"
