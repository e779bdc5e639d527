"""API keys for `rlhf serve`: `--api-key-env NAME` names an environment variable holding one key
or several (comma-separated); every `/v1/...` request must then carry `Authorization: Bearer KEY`.

A missing or wrong key gets 401 with an OpenAI-style error object (what the official clients
raise as `AuthenticationError`). Keys are compared in constant time, every key each time, so the
answer's timing says nothing about how much of a key was right; they are read from the
environment (never a flag, which `ps` shows to every user) and never logged or echoed.
`/health` and the chat page are not behind the key (the chat page signs people in on its own).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os

PROTECTED_PREFIX = "/v1/"


def keys_from_env(name: str) -> tuple[str, ...]:
    """The keys in environment variable `name` (comma-separated); an unset or empty one is an error."""
    value = os.environ.get(name, "")
    keys = tuple(k.strip() for k in value.split(",") if k.strip())
    if not keys:
        raise ValueError(f"--api-key-env {name}: the environment variable {name} is unset or empty; "
                         f"set it to the key(s) clients must send (e.g. export {name}=$(openssl rand -hex 24))")
    return keys


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def key_ok(sent: str, keys: tuple[str, ...]) -> bool:
    """Whether `sent` is one of `keys`, comparing against every key in constant time."""
    sent_bytes = sent.encode()
    matches = [hmac.compare_digest(sent_bytes, key.encode()) for key in keys]
    return any(matches)


class ApiKeyGate:
    """ASGI middleware: 401 for a `/v1/` request without one of `keys` as its bearer token."""

    def __init__(self, app, keys: tuple[str, ...]):
        self.app, self.keys = app, keys

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and key_ok(token.strip(), self.keys):
            return await self.app(scope, receive, send)
        message = ("Incorrect API key provided." if header else
                   "You didn't provide an API key: send it as 'Authorization: Bearer KEY'.")
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                     "code": "invalid_api_key"}}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})
