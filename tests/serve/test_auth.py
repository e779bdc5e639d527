"""API keys (`rlhf serve --api-key-env NAME`), /health, and the refusal to expose an open API."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

KEYS = "first-key-0123456789,second-key-9876543210"


@pytest.fixture(scope="module")
def keyed(tiny_model_dir):
    import os

    from .conftest import start

    os.environ["RLHF_TEST_SERVE_KEYS"] = KEYS
    srv = start([f"tiny={tiny_model_dir}"], max_tokens=8, api_key_env="RLHF_TEST_SERVE_KEYS")
    yield srv
    srv.stop()
    del os.environ["RLHF_TEST_SERVE_KEYS"]


def chat(url: str, key: str):
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key=key, max_retries=0)
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)


def test_the_official_client_needs_a_valid_key(keyed):
    import openai

    for wrong in ("wrong-key", KEYS.split(",")[0][:-1]):  # wrong, all but the last character (none: below)
        with pytest.raises(openai.AuthenticationError) as err:
            chat(keyed.url, wrong)
        assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
    for key in KEYS.split(","):  # either key of the list
        assert chat(keyed.url, key).choices[0].message.content is not None


def test_no_authorization_header_is_401_and_health_is_open(keyed):
    base = keyed.url.removesuffix("/v1")
    answer = httpx.get(f"{keyed.url}/models")
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"
    assert answer.headers["www-authenticate"] == "Bearer"
    assert KEYS.split(",")[0] not in answer.text
    health = httpx.get(f"{base}/health")
    assert health.status_code == 200 and health.json() == {"status": "ok", "models": ["tiny"]}


def test_an_exposed_host_without_a_key_refuses_to_start(tiny_model_dir):
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rlhf", "serve", "--model", str(tiny_model_dir), "--host", "0.0.0.0",
                           "--port", "9"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "--api-key-env" in done.stderr and "--allow-unauthenticated" in done.stderr
    assert "Traceback" not in done.stderr and time.perf_counter() - t < 30


def test_the_refusal_and_its_exceptions():
    from rlhf.config import ServeConfig
    from rlhf.serve.server import api_keys

    with pytest.raises(ValueError, match="without an API key"):
        api_keys(ServeConfig(model=("m",), host="0.0.0.0"))
    assert api_keys(ServeConfig(model=("m",), host="0.0.0.0", allow_unauthenticated=True)) == ()
    assert api_keys(ServeConfig(model=("m",), host="127.0.0.2")) == ()  # loopback: only this machine reaches it
    with pytest.raises(ValueError, match="RLHF_NO_SUCH_VARIABLE is unset"):
        api_keys(ServeConfig(model=("m",), api_key_env="RLHF_NO_SUCH_VARIABLE"))
