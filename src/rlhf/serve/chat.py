"""The chat page of `rlhf serve --db URL`: people chat with the served models and their feedback
lands in the rlhf.feedback store, where `rlhf label export` finds it.

Server-side pages (Jinja2, no JavaScript, no external assets): each answer has thumbs up/down
with a reason (a thumbs task in project `<prefix>-thumbs`), "regenerate" (a second answer from
the same model; picking one stores a comparison in `<prefix>-pairs`), and an arena mode (two
models answer, names hidden until the vote, also a comparison in `<prefix>-pairs`). Every
response is stored with the model directory that wrote it (`responses.source`). The
conversation travels in a hidden form field; feedback is saved once per form (its request id);
every form carries a CSRF token signed with the store's secret.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid

from fastapi import FastAPI, Form
from fastapi.responses import HTMLResponse
from jinja2 import Environment, DictLoader
from starlette.concurrency import run_in_threadpool

from ..feedback import repo
from ..feedback.security import csrf_ok, csrf_token
from ..feedback.tables import Task
from ..feedback.web import favicon
from .protocol import ApiError

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>rlhf chat</title>
<link rel="icon" href="/favicon.ico" type="image/svg+xml">
<style>body{font-family:sans-serif;max-width:60em;margin:1em auto}.turn{margin:.5em 0}.user{color:#036}
.answers{display:flex;gap:1em}.answer{flex:1;border:1px solid #999;padding:.5em}textarea{width:100%}</style>
</head><body><h1>rlhf chat</h1>
{% if notice %}<p class="notice">{{ notice }}</p>{% endif %}
{% for m in history %}<div class="turn {{ m.role }}"><b>{{ m.role }}:</b> {{ m.content }}</div>{% endfor %}
{% if answers %}<div class="answers">{% for a in answers %}<div class="answer" id="answer-{{ loop.index0 }}">
<b>{{ a.title }}</b><p>{{ a.text }}</p>
{% if pick %}<form method="post" action="/chat/pick"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="task" value="{{ task }}">
<input type="hidden" name="winner" value="{{ a.id }}"><input type="hidden" name="request_id" value="{{ request_id }}">
<input type="hidden" name="history" value="{{ history_json }}"><input type="hidden" name="model" value="{{ model }}">
<button type="submit">This one is better</button></form>{% endif %}</div>{% endfor %}</div>
{% if thumbs %}<form method="post" action="/chat/thumbs"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="task" value="{{ task }}">
<input type="hidden" name="request_id" value="{{ request_id }}"><input type="hidden" name="history" value="{{ history_json }}">
<input type="hidden" name="model" value="{{ model }}"><label>Reason <input name="reason"></label>
<button name="up" value="1">Thumbs up</button><button name="up" value="0">Thumbs down</button></form>
<form method="post" action="/chat/regenerate"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="task" value="{{ task }}">
<input type="hidden" name="history" value="{{ history_json }}"><input type="hidden" name="model" value="{{ model }}">
<button type="submit">Regenerate</button></form>{% endif %}{% endif %}
{% if not pick %}<form method="post" action="/chat/send"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="history" value="{{ history_json }}">
<label>Model <select name="model">{% for name in models %}<option{% if name == model %} selected{% endif %}>{{ name }}</option>{% endfor %}
<option value="arena"{% if model == "arena" %} selected{% endif %}>arena: two models, names hidden</option></select></label>
<textarea name="message" rows="3" required></textarea><button type="submit">Send</button></form>{% endif %}
</body></html>"""

TEMPLATES = Environment(loader=DictLoader({"chat.html": PAGE}), autoescape=True)
ANNOTATOR = "chat"  # the store's annotator for every chat user (the page has no sign-in)


def mount_chat(app: FastAPI, models: dict, sessions, prefix: str, generate) -> None:
    """Add the chat routes. `generate(served, conversation, temperature, seed) -> awaitable str`."""

    with sessions() as s:  # forms carry a token a page of another site cannot read (cross-site request forgery)
        secret = repo.csrf_secret(s)
    csrf = csrf_token(secret, "rlhf-serve-chat")

    def checked(sent: str) -> None:
        if not csrf_ok(secret, "rlhf-serve-chat", sent):
            raise ApiError(403, "the form's CSRF token is missing or wrong: reload /chat", code="csrf")

    def page(**context) -> HTMLResponse:
        history = context.pop("history", [])
        context["csrf"] = csrf
        context.setdefault("model", next(iter(models)))
        return HTMLResponse(TEMPLATES.get_template("chat.html").render(
            models=list(models), history=history, history_json=json.dumps(history), **context))

    def store(mode: str):
        """(session, project, annotator) for the project of `mode` ("thumbs" | "pairwise")."""
        s = sessions()
        name = f"{prefix}-{'thumbs' if mode == 'thumbs' else 'pairs'}"
        project = repo.project_by_name(s, name) or repo.create_project(s, name, mode)
        annotator = repo.annotator_by_name(s, project, ANNOTATOR, create=True)
        s.commit()
        return s, project, annotator

    for mode in ("thumbs", "pairwise"):  # made now: the first posts of two people at once both inserted them (a 500)
        store(mode)[0].close()

    def add_task(mode: str, history: list[dict], responses: list[tuple[str, str]]) -> tuple[int, list[int]]:
        s, project, _ = store(mode)
        with s:
            ids = repo.add_prompt(s, project, history, responses)
            task = repo.add_task(s, project, ids)
            s.commit()
            return task.id, ids

    def label(mode: str, task_id: int, request_id: str, **answer) -> None:
        s, project, annotator = store(mode)
        with s:
            task = s.get(Task, task_id)
            if task is None or task.project_id != project.id:
                raise ApiError(404, f"no such task {task_id}")
            try:
                repo.save_label(s, annotator, task, request_id, **answer)
            except repo.Refused as err:
                raise ApiError(err.status, str(err)) from None

    def parse_history(text: str) -> list[dict]:
        try:
            history = json.loads(text or "[]")
            assert isinstance(history, list) and all(m["role"] in ("user", "assistant") and isinstance(m["content"], str)
                                                     for m in history)
            return history
        except (ValueError, AssertionError, KeyError, TypeError):
            raise ApiError(400, "the conversation field is malformed") from None

    app.get("/favicon.ico", include_in_schema=False)(favicon)

    @app.get("/chat", response_class=HTMLResponse)
    async def chat_home():
        return page()

    @app.post("/chat/send", response_class=HTMLResponse)
    async def send(model: str = Form(...), message: str = Form(...), history: str = Form("[]"), csrf: str = Form("")):
        checked(csrf)
        conversation = parse_history(history) + [{"role": "user", "content": message}]
        if model == "arena":
            if len(models) < 2:
                raise ApiError(400, "the arena needs two models: start rlhf serve with two --model")
            pair = random.sample(list(models), 2)
            texts = await asyncio.gather(*(generate(models[name], conversation, 0.7, None) for name in pair))
            task, ids = await run_in_threadpool(add_task, "pairwise", conversation,
                                                [(t, models[n].path) for t, n in zip(texts, pair)])
            answers = [{"title": f"Answer {'AB'[i]}", "text": t, "id": ids[i]} for i, t in enumerate(texts)]
            return page(history=conversation, answers=answers, pick=True, task=task, model="arena",
                        request_id=uuid.uuid4().hex)
        served = _served(models, model)
        text = await generate(served, conversation, 0.7, None)
        task, ids = await run_in_threadpool(add_task, "thumbs", conversation, [(text, served.path)])
        return page(history=conversation, answers=[{"title": model, "text": text, "id": ids[0]}], thumbs=True,
                    task=task, model=model, request_id=uuid.uuid4().hex)

    @app.post("/chat/thumbs", response_class=HTMLResponse)
    async def thumbs(task: int = Form(...), up: int = Form(...), reason: str = Form(""), request_id: str = Form(...),
                     history: str = Form("[]"), model: str = Form(...), csrf: str = Form("")):
        checked(csrf)
        await run_in_threadpool(label, "thumbs", task, request_id, outcome="thumbs", thumbs=bool(up), reason=reason)
        answer = await run_in_threadpool(_texts_of, sessions, task)
        conversation = parse_history(history) + [{"role": "assistant", "content": answer[0][0]}]
        return page(history=conversation, model=model, notice="Thanks: feedback saved.")

    @app.post("/chat/regenerate", response_class=HTMLResponse)
    async def regenerate(task: int = Form(...), history: str = Form("[]"), model: str = Form(...), csrf: str = Form("")):
        checked(csrf)
        served = _served(models, model)
        conversation = parse_history(history)
        (first, source), = await run_in_threadpool(_texts_of, sessions, task)
        second = await generate(served, conversation, 1.0, None)
        pair_task, ids = await run_in_threadpool(add_task, "pairwise", conversation, [(first, source), (second, served.path)])
        answers = [{"title": f"Answer {'AB'[i]}", "text": t, "id": ids[i]} for i, t in enumerate((first, second))]
        return page(history=conversation, answers=answers, pick=True, task=pair_task, model=model,
                    request_id=uuid.uuid4().hex)

    @app.post("/chat/pick", response_class=HTMLResponse)
    async def pick(task: int = Form(...), winner: int = Form(...), request_id: str = Form(...),
                   history: str = Form("[]"), model: str = Form(...), csrf: str = Form("")):
        checked(csrf)
        texts = await run_in_threadpool(_texts_of, sessions, task, True)
        if winner not in texts:
            raise ApiError(400, f"response {winner} is not one of task {task}'s")
        await run_in_threadpool(label, "pairwise", task, request_id, outcome="win", winner_id=winner, strength=2)
        by_path = {m.path: name for name, m in models.items()}
        reveal = "; ".join(f"{'AB'[i]}: {by_path.get(src, src)}" for i, (_, src) in enumerate(texts.values()))
        conversation = parse_history(history) + [{"role": "assistant", "content": texts[winner][0]}]
        return page(history=conversation, model=model, notice=f"Vote saved. The answers came from {reveal}.")


def _served(models: dict, name: str):
    if name not in models:
        raise ApiError(404, f"The model {name!r} does not exist", param="model", code="model_not_found")
    return models[name]


def _texts_of(sessions, task_id: int, by_id: bool = False):
    """The (text, source) of a task's responses, in order (a dict by response id with by_id)."""
    with sessions() as s:
        task = s.get(Task, task_id)
        if task is None:
            raise ApiError(404, f"no such task {task_id}")
        rows = repo.responses_of(s, task)
        return {r.id: (r.text, r.source) for r in rows} if by_id else [(r.text, r.source) for r in rows]
