"""Tokens, CSRF and bounded request bodies.

Tokens are random URL-safe strings handed out once (the admin token printed on first start,
one invite link per annotator); the store keeps only their SHA-256, so a copy of the database
grants nothing. A CSRF token is an HMAC of the session's token hash under a server secret:
forms carry it, and a request authenticated by cookie must send it back. A request that
authenticates with an `Authorization: Bearer` header needs none (a browser never adds that
header on its own, so a forged cross-site form cannot carry it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.types import ASGIApp, Receive, Scope, Send


def new_token() -> str:
    return secrets.token_urlsafe(24)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(secret: str, session_token: str) -> str:
    return hmac.new(secret.encode(), b"csrf:" + hash_token(session_token).encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: str, session_token: str, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(csrf_token(secret, session_token), sent)


class BodyLimit:
    """ASGI middleware: 413 for a request body over `max_bytes`, whether it declares its
    length up front or streams in chunks (the body is counted as it arrives)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _too_large(send)
        seen, started, exceeded = 0, False, False

        async def counting_receive():
            nonlocal seen, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True  # the app sees the client leave; we answer 413 below
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if exceeded and not started:
                return  # drop whatever the app says about the cut body (an error page)
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _too_large(send)


async def _too_large(send: Send) -> None:
    body = b"request body too large"
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
