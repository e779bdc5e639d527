"""What every page of the app shares: templates, who is calling, CSRF checks, a database
session per request, and the admin and annotator guards. Routes import this module; `app`
puts the routes together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader
from sqlalchemy.orm import Session

from rlhf.feedback import repo
from rlhf.feedback.security import csrf_ok, csrf_token
from rlhf.feedback.tables import Annotator

HERE = Path(__file__).parent
ADMIN_COOKIE, ANNOTATOR_COOKIE = "rlhf_admin", "rlhf_annotator"
templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)  # escape every value shown


# The icon of every page (the labelling app's and the chat page): a browser asks for /favicon.ico
# on each page it opens, and a 404 there fills its console.
FAVICON_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
               'fill="#1f77b4"/><path d="M5 13V3.5h3.5a2.6 2.6 0 0 1 0 5.2H5M8.4 8.7 11.5 13" stroke="#fff" '
               'stroke-width="1.7" fill="none"/></svg>')


def favicon() -> Response:
    return Response(FAVICON_SVG, media_type="image/svg+xml", headers={"cache-control": "public, max-age=86400"})


def render(request: Request, template: str, status_code: int = 200, **context) -> HTMLResponse:
    context.setdefault("csrf", getattr(request.state, "csrf", ""))
    return HTMLResponse(templates.get_template(template).render(request=request, **context), status_code=status_code)


@dataclass
class Caller:
    """Who is calling, and how: a token from a cookie needs a CSRF token on POST."""

    token: str
    from_cookie: bool


def caller(request: Request, cookie: str) -> Caller | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return Caller(header[7:].strip(), False)
    token = request.cookies.get(cookie)
    return Caller(token, True) if token else None


def check_csrf(request: Request, who: Caller, sent: str | None) -> None:
    """Refuse a cookie-authenticated POST without the right CSRF token (403)."""
    if who.from_cookie and not csrf_ok(request.app.state.csrf_secret, who.token, sent):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")


def db(request: Request):
    """A database session for one request."""
    with request.app.state.sessions() as session:
        yield session


def require_admin(request: Request, s: Session) -> Caller:
    who = caller(request, ADMIN_COOKIE)
    if who is None or not repo.is_admin(s, who.token):
        raise HTTPException(401, "admin token required: sign in at /admin/login")
    request.state.csrf = csrf_token(request.app.state.csrf_secret, who.token)
    return who


def require_annotator(request: Request, s: Session) -> tuple[Caller, Annotator]:
    who = caller(request, ANNOTATOR_COOKIE)
    annotator = repo.annotator_by_token(s, who.token) if who else None
    if annotator is None:
        raise HTTPException(401, "annotator token required: open your invite link")
    request.state.csrf = csrf_token(request.app.state.csrf_secret, who.token)
    return who, annotator
