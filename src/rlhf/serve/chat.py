"""The chat page of `rlhf serve --db URL`: people chat with the served models and their feedback
lands in the rlhf.feedback store, under their name, where `rlhf label export` finds it.

Only invited people chat: `rlhf label invite NAME --chat --db URL` prints a personal link
/chat/join/TOKEN (rlhf.feedback.chat_access; the store keeps the token's hash, as for the
labelling app's annotators). Opening it puts the token in a cookie scoped to /chat; every /chat
request is checked against the store, and without a valid token the page answers 401 and stores
nothing. Every form carries the CSRF token of the labelling app (rlhf.feedback.security, derived
from the signed-in token), and a form about a stored answer carries that answer's task sealed to
the same token, so nobody reads or labels another person's conversation by changing a task id.

Server-side pages in the labelling app's templates, stylesheet and key script (work without
JavaScript): each answer has thumbs up/down with a reason (a thumbs task in `<prefix>-thumbs`),
"regenerate" (a second answer from the same model; picking one stores a comparison in
`<prefix>-pairs`), and an arena mode (two models answer, names hidden until the vote, also in
`<prefix>-pairs`). Each label's annotator is the signed-in person; every response is stored with
the model directory that wrote it. The conversation travels in a hidden form field; a form's
request id makes a resent form store nothing twice.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from dataclasses import dataclass

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from ..feedback import repo
from ..feedback.app import SECURITY_HEADERS
from ..feedback.chat_access import author_in, chat_projects, chat_user
from ..feedback.security import csrf_ok, csrf_token
from ..feedback.tables import Annotator, Task
from ..feedback.web import HERE, caller, favicon, templates
from .protocol import ApiError, error_response

CHAT_COOKIE = "rlhf_chat"  # not the labelling app's cookie: on one host both apps would share it (cookies ignore ports)
SIGN_IN = "sign in with your personal invite link to chat"


class Refusal(Exception):
    """A chat request turned down: answered as a page of the chat's look (JSON for a JSON client)."""

    def __init__(self, status: int, message: str, code: str | None = None, **page):
        super().__init__(message)
        self.status, self.message, self.code, self.page = status, message, code, page


@dataclass(frozen=True)
class Person:
    """Who is signed in: their token (cookie or Bearer header), and their annotator in the store."""

    token: str
    from_cookie: bool
    annotator_id: int
    name: str


def _html(template: str, status_code: int = 200, **context) -> HTMLResponse:
    return HTMLResponse(templates.get_template(template).render(**context), status_code=status_code,
                        headers=SECURITY_HEADERS)


def mount_chat(app: FastAPI, models: dict, sessions, prefix: str, generate) -> None:
    """Add the chat routes. `generate(served, conversation, temperature, seed) -> awaitable str`."""
    with sessions() as s:
        secret = repo.csrf_secret(s)
        chat_projects(s, prefix)
        s.commit()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")  # the labelling app's look
    app.get("/favicon.ico", include_in_schema=False)(favicon)

    @app.exception_handler(Refusal)
    async def refused(request: Request, err: Refusal):
        if request.headers.get("accept", "").startswith("application/json"):
            return error_response(err.status, err.message, code=err.code)
        return _html("chat_error.html", err.status, status=err.status, detail=err.message, **err.page)

    def find(token: str | None) -> tuple[int, str] | None:
        with sessions() as s:
            user = chat_user(s, prefix, token)
            return None if user is None else (user.id, user.name)

    async def signed_in(request: Request, csrf: str | None = None) -> Person:
        """The signed-in person (401 otherwise); with `csrf`, a form post whose token must match (403)."""
        who = caller(request, CHAT_COOKIE)
        found = await run_in_threadpool(find, who.token) if who else None
        if found is None:
            raise Refusal(401, SIGN_IN + (" (this browser's sign-in is no longer valid)" if who else ""),
                          code="not_signed_in")
        if csrf is not None and who.from_cookie and not csrf_ok(secret, who.token, csrf):
            raise Refusal(403, "the form's CSRF token is missing or wrong: reload the chat page and try again",
                          code="csrf")
        return Person(who.token, who.from_cookie, *found)

    def seal(person: Person, task_id: int) -> str:
        return csrf_token(secret, f"{person.token} task {task_id}")

    def unsealed(person: Person, task_id: int, sent: str) -> int:
        if not csrf_ok(secret, f"{person.token} task {task_id}", sent):
            raise Refusal(403, f"task {task_id} is not one of your answers")
        return task_id

    def page(person: Person, **context) -> HTMLResponse:
        history = context.pop("history", [])
        context.setdefault("model", next(iter(models)))
        task = context.get("task")
        answers = context.get("answers") or []
        # sending on without rating the one answer shown keeps that answer in the conversation
        send_history = history + [{"role": "assistant", "content": answers[0]["text"]}] if context.get("thumbs") else history
        return _html("chat.html", models=list(models), history=history, history_json=json.dumps(history),
                     send_history_json=json.dumps(send_history), csrf=csrf_token(secret, person.token),
                     seal=seal(person, task) if task is not None else "", user=person.name, **context)

    def add_task(mode: str, history: list[dict], responses: list[tuple[str, str]]) -> tuple[int, list[int]]:
        with sessions() as s:
            project = chat_projects(s, prefix)[mode]
            ids = repo.add_prompt(s, project, history, responses)
            task = repo.add_task(s, project, ids)
            s.commit()
            return task.id, ids

    def label(person: Person, mode: str, task_id: int, request_id: str, **answer) -> None:
        with sessions() as s:
            project = chat_projects(s, prefix)[mode]
            task = s.get(Task, task_id)
            if task is None or task.project_id != project.id:
                raise Refusal(404, f"no such task {task_id}")
            author = author_in(s, s.get(Annotator, person.annotator_id), project)
            try:
                repo.save_label(s, author, task, request_id, **answer)
            except repo.Refused as err:
                raise Refusal(err.status, str(err)) from None

    async def answer(served, conversation: list[dict], temperature: float) -> str:
        try:
            return await generate(served, conversation, temperature, None)
        except ApiError as err:  # a conversation over the context, a failed decode: a page, not JSON
            hint = f" ({served.context} tokens): start a new conversation" if err.code == "context_length_exceeded" else ""
            raise Refusal(err.status, err.message + hint) from None

    @app.get("/chat/join/{token}")
    async def join(token: str):
        """The invite link: keep the token in a cookie (sent to /chat pages only) and open the chat."""
        if await run_in_threadpool(find, token) is None:
            raise Refusal(403, "this invite link is not valid (it may have been replaced by a newer one): "
                               "ask for a new one")
        response = RedirectResponse("/chat", status_code=303, headers=SECURITY_HEADERS)
        response.set_cookie(CHAT_COOKIE, token, path="/chat", httponly=True, samesite="lax", max_age=90 * 24 * 3600)
        return response

    @app.get("/chat", response_class=HTMLResponse)
    async def chat_home(request: Request):
        return page(await signed_in(request))

    @app.post("/chat/signout", response_class=HTMLResponse)
    async def signout(request: Request, csrf: str = Form("")):
        await signed_in(request, csrf)
        response = _html("chat_error.html", 200, status=401, notice="You are signed out. Your invite link signs you "
                                                                    "in again.")
        response.delete_cookie(CHAT_COOKIE, path="/chat")
        return response

    @app.post("/chat/send", response_class=HTMLResponse)
    async def send(request: Request, model: str = Form(...), message: str = Form(...), history: str = Form("[]"),
                   csrf: str = Form("")):
        person = await signed_in(request, csrf)
        conversation = _parse_history(history) + [{"role": "user", "content": message}]
        if model == "arena":
            if len(models) < 2:
                raise Refusal(400, "the arena needs two models: start rlhf serve with two --model")
            pair = random.sample(list(models), 2)
            texts = await asyncio.gather(*(answer(models[name], conversation, 0.7) for name in pair))
            task, ids = await run_in_threadpool(add_task, "pairwise", conversation,
                                                [(t, models[n].path) for t, n in zip(texts, pair)])
            answers = [{"title": f"Answer {'AB'[i]}", "text": t, "id": ids[i]} for i, t in enumerate(texts)]
            return page(person, history=conversation, answers=answers, pick=True, task=task, model="arena",
                        request_id=uuid.uuid4().hex)
        served = _served(models, model)
        text = await answer(served, conversation, 0.7)
        task, ids = await run_in_threadpool(add_task, "thumbs", conversation, [(text, served.path)])
        return page(person, history=conversation, answers=[{"title": model, "text": text, "id": ids[0]}],
                    thumbs=True, task=task, model=model, request_id=uuid.uuid4().hex)

    @app.post("/chat/thumbs", response_class=HTMLResponse)
    async def thumbs(request: Request, task: int = Form(...), seal: str = Form(""), up: int = Form(...),
                     reason: str = Form(""), request_id: str = Form(...), history: str = Form("[]"),
                     model: str = Form(...), csrf: str = Form("")):
        person = await signed_in(request, csrf)
        unsealed(person, task, seal)
        await run_in_threadpool(label, person, "thumbs", task, request_id, outcome="thumbs", thumbs=bool(up),
                                reason=reason[:5000])
        (text, _), = await run_in_threadpool(_texts_of, sessions, task)
        conversation = _parse_history(history) + [{"role": "assistant", "content": text}]
        return page(person, history=conversation, model=model, notice="Thanks: feedback saved.")

    @app.post("/chat/regenerate", response_class=HTMLResponse)
    async def regenerate(request: Request, task: int = Form(...), seal: str = Form(""), history: str = Form("[]"),
                         model: str = Form(...), csrf: str = Form("")):
        person = await signed_in(request, csrf)
        unsealed(person, task, seal)
        served = _served(models, model)
        conversation = _parse_history(history)
        (first, source), = await run_in_threadpool(_texts_of, sessions, task)
        second = await answer(served, conversation, 1.0)
        pair_task, ids = await run_in_threadpool(add_task, "pairwise", conversation, [(first, source), (second, served.path)])
        answers = [{"title": f"Answer {'AB'[i]}", "text": t, "id": ids[i]} for i, t in enumerate((first, second))]
        return page(person, history=conversation, answers=answers, pick=True, task=pair_task, model=model,
                    request_id=uuid.uuid4().hex)

    @app.post("/chat/pick", response_class=HTMLResponse)
    async def pick(request: Request, task: int = Form(...), seal: str = Form(""), winner: int = Form(...),
                   request_id: str = Form(...), history: str = Form("[]"), model: str = Form(...),
                   csrf: str = Form("")):
        person = await signed_in(request, csrf)
        unsealed(person, task, seal)
        texts = await run_in_threadpool(_texts_of, sessions, task, True)
        if winner not in texts:
            raise Refusal(400, f"response {winner} is not one of task {task}'s")
        await run_in_threadpool(label, person, "pairwise", task, request_id, outcome="win", winner_id=winner, strength=2)
        by_path = {m.path: name for name, m in models.items()}
        reveal = "; ".join(f"{'AB'[i]}: {by_path.get(src, src)}" for i, (_, src) in enumerate(texts.values()))
        conversation = _parse_history(history) + [{"role": "assistant", "content": texts[winner][0]}]
        return page(person, history=conversation, model=model, notice=f"Vote saved. The answers came from {reveal}.")


def _parse_history(text: str) -> list[dict]:
    try:
        history = json.loads(text or "[]")
        assert isinstance(history, list) and all(m["role"] in ("user", "assistant") and isinstance(m["content"], str)
                                                 for m in history)
        return history
    except (ValueError, AssertionError, KeyError, TypeError):
        raise Refusal(400, "the conversation field is malformed") from None


def _served(models: dict, name: str):
    if name not in models:
        raise Refusal(404, f"the model {name!r} does not exist")
    return models[name]


def _texts_of(sessions, task_id: int, by_id: bool = False):
    """The (text, source) of a task's responses, in order (a dict by response id with by_id)."""
    with sessions() as s:
        task = s.get(Task, task_id)
        if task is None:
            raise Refusal(404, f"no such task {task_id}")
        rows = repo.responses_of(s, task)
        return {r.id: (r.text, r.source) for r in rows} if by_id else [(r.text, r.source) for r in rows]
