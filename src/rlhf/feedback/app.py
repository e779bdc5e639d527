"""The labelling web app: a FastAPI application of server-rendered pages that work without
JavaScript (a small script only adds keyboard shortcuts).

Requests go route -> `repo` -> tables. Who may do what:
- admin pages need the admin token (a cookie set by /admin/login, or `Authorization: Bearer`);
- annotation pages need an annotator token (a cookie set by the invite link /join/TOKEN, or a
  Bearer header) and reach only that annotator's project, tasks and labels;
- a POST authenticated by cookie must carry the form's CSRF token;
- bodies over the limit get 413 (`security.BodyLimit`);
- a POST to a page that needs a token and carries none gets 401 before its body is read
  (`AuthBeforeBody`).
Responses carry a strict Content-Security-Policy; templates escape everything they show.
`/health` (also `/healthz`) and `/metrics` need no token (`rlhf.feedback.metrics`).
Access logs never hold a token: uvicorn's own access log is off and this app logs paths with
the invite token cut out.
"""

from __future__ import annotations

import logging
import re
import time

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from rlhf.feedback import repo, routes_admin, routes_annotate, routes_monitor
from rlhf.feedback.metrics import LabelMetrics, RequestMetrics, health
from rlhf.feedback.security import BodyLimit
from rlhf.feedback.web import ADMIN_COOKIE, ANNOTATOR_COOKIE, HERE, caller, favicon, render

log = logging.getLogger("rlhf.feedback")
_SECRET_IN_PATH = re.compile(r"(/join/)[^/?#]+")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",  # the invite link holds a token: never send it on
}


def create_app(sessions: sessionmaker[Session], max_body_bytes: int = 10 * 2**20) -> ASGIApp:
    """The app on a migrated store, wrapped in the request-body limit and the request metrics."""
    app = FastAPI(title="rlhf label", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.sessions = sessions
    metrics = app.state.metrics = LabelMetrics()
    with sessions() as s:
        app.state.csrf_secret = repo.csrf_secret(s)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(routes_admin.router)
    app.include_router(routes_annotate.router)
    app.include_router(routes_monitor.router)

    @app.middleware("http")
    async def headers_and_log(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        path = _SECRET_IN_PATH.sub(r"\1<token>", request.url.path)
        log.info("%s %s %d %.1fms", request.method, path, response.status_code, 1000 * (time.perf_counter() - start))
        return response

    @app.exception_handler(HTTPException)
    async def error_page(request: Request, exc: HTTPException):
        if request.headers.get("accept", "").startswith("application/json"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        return render(request, "error.html", exc.status_code, status=exc.status_code, detail=exc.detail)

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request):
        return render(request, "home.html")

    app.get("/favicon.ico", include_in_schema=False)(favicon)

    @app.get("/health")
    @app.get("/healthz")  # the older name, kept for the checks that use it
    async def ready():
        return await health(sessions)

    @app.get("/metrics")
    def prometheus_metrics():
        return metrics.response()

    return RequestMetrics(AuthBeforeBody(BodyLimit(app, max_body_bytes), sessions), metrics)


def _guard(path: str):
    """(cookie, token check, message) for a path whose requests with a body need a token, else None."""
    if path == "/admin" or (path.startswith("/admin/") and path != "/admin/login"):
        return ADMIN_COOKIE, repo.is_admin, "admin token required: sign in at /admin/login"
    if path.startswith("/annotate/") or path == "/undo":
        return (ANNOTATOR_COOKIE, lambda s, token: repo.annotator_by_token(s, token) is not None,
                "annotator token required: open your invite link")
    return None


class AuthBeforeBody:
    """ASGI middleware: a request with a body (POST) to a page that needs a token is answered 401
    before its body is read when it carries no valid token. FastAPI parses a form before the
    route's own check runs, so without this an anonymous post had its upload read and a large
    field got 400 "Field exceeded maximum size" instead of 401. Which token fits which page is
    still the route's to decide (an annotator of another project gets the route's 403)."""

    def __init__(self, app: ASGIApp, sessions: sessionmaker[Session]):
        self.app, self.sessions = app, sessions

    def _valid(self, check, token: str) -> bool:
        with self.sessions() as s:
            return check(s, token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guard = _guard(scope["path"]) if scope["type"] == "http" and scope["method"] not in SAFE_METHODS else None
        if guard is not None:
            cookie, check, message = guard
            request = Request(scope)
            who = caller(request, cookie)
            if who is None or not await run_in_threadpool(self._valid, check, who.token):
                if request.headers.get("accept", "").startswith("application/json"):
                    response = JSONResponse({"detail": message}, status_code=401)
                else:
                    response = render(request, "error.html", 401, status=401, detail=message)
                response.headers.update(SECURITY_HEADERS)
                log.info("%s %s 401 (no token; body not read)", scope["method"], scope["path"])
                return await response(scope, receive, send)
        await self.app(scope, receive, send)
