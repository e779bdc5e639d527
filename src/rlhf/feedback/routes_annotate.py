"""Annotator pages: sign in by invite link, label the next task, skip, undo the last label.

Each answer form carries a request id minted when the page was rendered, so submitting the
same form twice (a double click, a retry after a lost response) stores one label.
"""

from __future__ import annotations

import random
import uuid

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from rlhf.feedback import repo
from rlhf.feedback.assign import spread
from rlhf.feedback.tables import Label, Project, Task
from rlhf.feedback.web import ANNOTATOR_COOKIE, check_csrf, db, render, require_annotator

router = APIRouter()

# Pairwise choices, left to right as the buttons (and keys 1-8) show them: (outcome, side, strength).
PAIRWISE_CHOICES = {
    "a3": ("win", "a", 3), "a2": ("win", "a", 2), "a1": ("win", "a", 1), "tie": ("tie", None, None),
    "b1": ("win", "b", 1), "b2": ("win", "b", 2), "b3": ("win", "b", 3), "both_bad": ("both_bad", None, None),
}
CHOICE_TEXT = {"a3": "A is much better", "a2": "A is better", "a1": "A is slightly better", "tie": "Tie",
               "b1": "B is slightly better", "b2": "B is better", "b3": "B is much better", "both_bad": "Both are bad"}


def display_order(annotator_id: int, task: Task) -> list[int]:
    """The task's responses in an order private to this annotator and task (stable on reload),
    so that position says nothing about source and position bias averages out."""
    order = list(task.response_ids)
    random.Random(spread(annotator_id, task.id)).shuffle(order)
    return order


def parse_answer(mode: str, form: dict, response_ids: list[int]) -> dict:
    """The label fields of a submitted form, or 422 when it does not answer this task."""
    ids = set(response_ids)
    if mode == "pairwise":
        choice = PAIRWISE_CHOICES.get(form.get("choice", ""))
        try:
            shown = {"a": int(form.get("left", "")), "b": int(form.get("right", ""))}
        except ValueError:
            shown = {}
        if choice is None or set(shown.values()) != ids or len(ids) != 2:
            raise HTTPException(422, "choose one of the buttons for this pair")
        outcome, side, strength = choice
        return {"outcome": outcome, "winner_id": shown[side] if side else None, "strength": strength}
    if mode == "ranking":
        try:
            positions = {rid: int(form.get(f"rank_{rid}", "")) for rid in response_ids}
        except ValueError:
            raise HTTPException(422, "give every response a rank") from None
        if sorted(positions.values()) != list(range(1, len(response_ids) + 1)):
            raise HTTPException(422, "each rank from 1 to %d must be used exactly once" % len(response_ids))
        return {"outcome": "ranking", "ranking": sorted(response_ids, key=positions.get)}
    if form.get("choice") not in ("up", "down"):
        raise HTTPException(422, "choose thumbs up or down")
    return {"outcome": "thumbs", "thumbs": form["choice"] == "up"}


def _task_for(s: Session, annotator, task_id: int) -> Task:
    task = s.get(Task, task_id)
    if not repo.can_open(s, annotator, task):
        raise HTTPException(403, "this task is not yours to label")
    return task


def _page(request: Request, s: Session, annotator, task: Task | None, q: repo.Queue, project: Project):
    done = len(q.seen)
    if task is None:
        return render(request, "done.html", annotator=annotator, project=project, done=done)
    responses = {r.id: r for r in repo.responses_of(s, task)}
    shown = [responses[i] for i in display_order(annotator.id, task)]
    content = task.prompt.content
    turns = content if isinstance(content, list) else None
    has_undo = s.scalar(select(Label.id).where(Label.annotator_id == annotator.id, Label.undone_at.is_(None))
                        .limit(1)) is not None
    return render(request, "annotate.html", annotator=annotator, project=project, task=task, shown=shown,
                  prompt_text=None if turns else content, turns=turns, request_id=uuid.uuid4().hex,
                  choices=CHOICE_TEXT, done=done, total=done + q.left, has_undo=has_undo)


@router.get("/join/{token}")
def join(token: str, s: Session = Depends(db)):
    """The invite link: remember the annotator's token in a cookie and start labelling."""
    if repo.annotator_by_token(s, token) is None:
        raise HTTPException(403, "this invite link is not valid (it may have been replaced by a newer one)")
    response = RedirectResponse("/annotate", status_code=303)
    response.set_cookie(ANNOTATOR_COOKIE, token, httponly=True, samesite="lax", max_age=90 * 24 * 3600)
    return response


@router.get("/annotate", response_class=HTMLResponse)
def annotate_next(request: Request, s: Session = Depends(db)):
    _, annotator = require_annotator(request, s)
    project = s.get(Project, annotator.project_id)
    task, q = repo.next_task(s, annotator, project)
    return _page(request, s, annotator, task, q, project)


@router.get("/annotate/{task_id}", response_class=HTMLResponse)
def annotate_task(task_id: int, request: Request, s: Session = Depends(db)):
    _, annotator = require_annotator(request, s)
    task = _task_for(s, annotator, task_id)
    project = s.get(Project, annotator.project_id)
    return _page(request, s, annotator, task, repo.queue(s, annotator, project), project)


async def form_fields(request: Request) -> dict[str, str]:
    """The submitted form's text fields (their names depend on the task: rank_<response id>)."""
    return {k: v for k, v in (await request.form()).items() if isinstance(v, str)}


@router.post("/annotate/{task_id}")
def submit(task_id: int, request: Request, form: dict = Depends(form_fields), s: Session = Depends(db)):
    # A plain def: FastAPI runs it in a worker thread, so database waits never block the event loop.
    who, annotator = require_annotator(request, s)
    check_csrf(request, who, form.get("csrf"))
    request_id = form.get("request_id", "")
    if not 8 <= len(request_id) <= 64:
        raise HTTPException(422, "missing request id: reload the page")
    task = _task_for(s, annotator, task_id)
    project = s.get(Project, annotator.project_id)
    if form.get("action") == "skip":
        answer = {"outcome": "skip"}
    else:
        answer = parse_answer(project.mode, form, task.response_ids)
    try:
        label, created = repo.save_label(s, annotator, task, request_id, reason=form.get("reason", "")[:5000], **answer)
    except repo.Refused as refused:
        raise HTTPException(refused.status, str(refused)) from None
    if created:
        request.app.state.metrics.label_saved(project.name, label.outcome)
    if request.headers.get("accept", "").startswith("application/json"):
        return {"label_id": label.id, "created": created}
    return RedirectResponse("/annotate", status_code=303)


@router.post("/undo")
def undo(request: Request, csrf: str = Form(""), s: Session = Depends(db)):
    who, annotator = require_annotator(request, s)
    check_csrf(request, who, csrf)
    label = repo.undo_last(s, annotator)
    return RedirectResponse(f"/annotate/{label.task_id}" if label else "/annotate", status_code=303)
