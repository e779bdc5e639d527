"""Admin pages: sign in with the admin token, create projects from files, invite annotators,
set overlap and gold share, watch the dashboard, download exports."""

from __future__ import annotations

import json
import secrets
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rlhf.config.feedback import MODES, LabelExportConfig
from rlhf.data.formats import ROW_SUFFIXES, DataError
from rlhf.feedback import dashboard, plots, repo
from rlhf.feedback.export import export_rows
from rlhf.feedback.importer import import_file
from rlhf.feedback.tables import Annotator, Label, Project, Task
from rlhf.feedback.web import ADMIN_COOKIE, check_csrf, db, render, require_admin

router = APIRouter(prefix="/admin")


def _project(s: Session, project_id: int) -> Project:
    project = s.get(Project, project_id)
    if project is None:
        raise HTTPException(404, "no such project")
    return project


def _import_upload(s: Session, project: Project, upload: UploadFile, labels_as: str) -> str:
    """Import an uploaded file through the same readers as `rlhf label import`; a message."""
    name = Path(upload.filename or "upload.jsonl").name
    suffix = next((x for x in ROW_SUFFIXES if name.lower().endswith(x)), None)
    if suffix is None:
        raise HTTPException(400, f"{name}: upload a file ending in {', '.join(ROW_SUFFIXES)}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(upload.file.read())
        try:
            result = import_file(s, project, path, source=name, labels_as=labels_as)
        except (DataError, ValueError) as err:
            s.rollback()
            raise HTTPException(400, str(err).replace(str(path), name)) from None
    return f"imported {result.tasks} tasks from {name}"


LOGIN_CSRF_COOKIE = "rlhf_login_csrf"


def _login_form(request: Request, status_code: int = 200, **context) -> HTMLResponse:
    """The sign-in form with a fresh CSRF token, also set as a cookie (double submit): there is no
    session yet to bind it to, and another site can neither read the cookie nor set it."""
    nonce = secrets.token_urlsafe(24)
    response = render(request, "login.html", status_code, csrf=nonce, **context)
    response.set_cookie(LOGIN_CSRF_COOKIE, nonce, httponly=True, samesite="strict", max_age=3600)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request):
    return _login_form(request)


@router.post("/login")
def login(request: Request, token: str = Form(""), csrf: str = Form(""), s: Session = Depends(db)):
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not (expected and csrf and secrets.compare_digest(expected, csrf)):
        raise HTTPException(403, "the sign-in form has expired or came from another site: reload it and try again")
    if not repo.is_admin(s, token):
        return _login_form(request, 401, error="that is not the admin token")
    response = RedirectResponse("/admin", status_code=303)
    response.set_cookie(ADMIN_COOKIE, token, httponly=True, samesite="strict", max_age=7 * 24 * 3600)
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
def logout(request: Request, csrf: str = Form(""), s: Session = Depends(db)):
    check_csrf(request, require_admin(request, s), csrf)
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(ADMIN_COOKIE)
    return response


@router.get("", response_class=HTMLResponse)
def projects(request: Request, s: Session = Depends(db)):
    require_admin(request, s)
    counts = dict(s.execute(select(Task.project_id, func.count()).group_by(Task.project_id)).all())
    rows = [(p, counts.get(p.id, 0)) for p in s.scalars(select(Project).order_by(Project.id))]
    return render(request, "admin.html", projects=rows, modes=MODES)


@router.post("/projects")
def create_project(request: Request, name: str = Form(...), mode: str = Form("pairwise"), overlap: int = Form(1),
                   gold_share: float = Form(0.0), labels_as: str = Form("gold"), csrf: str = Form(""),
                   file: UploadFile | None = File(None), s: Session = Depends(db)):
    check_csrf(request, require_admin(request, s), csrf)
    name = name.strip()
    if not name or mode not in MODES or overlap < 1 or not 0 <= gold_share < 1 or labels_as not in ("gold", "annotator"):
        raise HTTPException(422, "a project needs a name, a mode, overlap >= 1 and a gold share in [0, 1)")
    if repo.project_by_name(s, name) is not None:
        raise HTTPException(409, f"a project named {name!r} exists already")
    project = repo.create_project(s, name, mode, overlap, gold_share)
    if file is not None and file.filename:
        _import_upload(s, project, file, labels_as)
    s.commit()
    return RedirectResponse(f"/admin/projects/{project.id}", status_code=303)


@router.get("/projects/{project_id}", response_class=HTMLResponse)
def project_page(project_id: int, request: Request, s: Session = Depends(db)):
    require_admin(request, s)
    project = _project(s, project_id)
    annotators = list(s.scalars(select(Annotator).where(Annotator.project_id == project.id).order_by(Annotator.id)))
    done = dict(s.execute(select(Label.annotator_id, func.count())
                          .where(Label.annotator_id.in_([a.id for a in annotators]), Label.undone_at.is_(None),
                                 Label.outcome != "skip").group_by(Label.annotator_id)).all())
    tasks = s.scalar(select(func.count()).select_from(Task).where(Task.project_id == project.id))
    gold = s.scalar(select(func.count()).select_from(Task).where(Task.project_id == project.id, Task.gold.is_not(None)))
    return render(request, "project.html", project=project, annotators=annotators, done=done, tasks=tasks, gold=gold)


@router.post("/projects/{project_id}/settings")
def settings(project_id: int, request: Request, overlap: int = Form(...), gold_share: float = Form(...),
             csrf: str = Form(""), s: Session = Depends(db)):
    check_csrf(request, require_admin(request, s), csrf)
    if overlap < 1 or not 0 <= gold_share < 1:
        raise HTTPException(422, "overlap must be >= 1 and the gold share in [0, 1)")
    project = _project(s, project_id)
    project.overlap, project.gold_share = overlap, gold_share
    s.commit()
    return RedirectResponse(f"/admin/projects/{project_id}", status_code=303)


@router.post("/projects/{project_id}/invite", response_class=HTMLResponse)
def invite(project_id: int, request: Request, name: str = Form(...), csrf: str = Form(""), s: Session = Depends(db)):
    """A personal sign-in link, shown once (only its hash is kept); inviting a name again replaces it."""
    check_csrf(request, require_admin(request, s), csrf)
    project = _project(s, project_id)
    if not name.strip():
        raise HTTPException(422, "give the annotator a name")
    token = repo.invite(s, project, name.strip())
    s.commit()
    link = str(request.base_url).rstrip("/") + f"/join/{token}"
    return render(request, "invited.html", project=project, name=name.strip(), link=link)


@router.post("/projects/{project_id}/import")
def import_more(project_id: int, request: Request, labels_as: str = Form("gold"), csrf: str = Form(""),
                file: UploadFile = File(...), s: Session = Depends(db)):
    check_csrf(request, require_admin(request, s), csrf)
    project = _project(s, project_id)
    _import_upload(s, project, file, labels_as if labels_as in ("gold", "annotator") else "gold")
    s.commit()
    return RedirectResponse(f"/admin/projects/{project_id}", status_code=303)


@router.get("/projects/{project_id}/dashboard", response_class=HTMLResponse)
def dashboard_page(project_id: int, request: Request, s: Session = Depends(db)):
    require_admin(request, s)
    project = _project(s, project_id)
    return render(request, "dashboard.html", project=project, d=dashboard.build(s, project))


@router.get("/projects/{project_id}/plots/{name}.png")
def plot(project_id: int, name: str, request: Request, s: Session = Depends(db)):
    require_admin(request, s)
    d = dashboard.build(s, _project(s, project_id), rounds=100 if name == "leaderboard" else 0)
    if name == "leaderboard":
        png = plots.leaderboard_png(d.leaderboard)
    elif name == "throughput":
        png = plots.throughput_png(d.timeline)
    else:
        raise HTTPException(404, "no such plot")
    return Response(png, media_type="image/png")


@router.get("/projects/{project_id}/export")
def export(project_id: int, request: Request, format: str = "comparisons", rule: str = "majority",
           drop_ties: bool = False, min_agreement: float = 0.0, min_gold_accuracy: float = 0.0,
           s: Session = Depends(db)):
    """The JSONL `rlhf label export` would write, as a download."""
    require_admin(request, s)
    project = _project(s, project_id)
    try:
        cfg = LabelExportConfig(project=project.name, format=format, rule=rule, drop_ties=drop_ties,
                                min_agreement=min_agreement, min_gold_accuracy=min_gold_accuracy)
    except ValueError as err:
        raise HTTPException(422, str(err)) from None
    if cfg.format not in ("comparisons", "rankings", "binary") or cfg.rule not in ("majority", "every"):
        raise HTTPException(422, "format: comparisons|rankings|binary; rule: majority|every")
    body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in export_rows(s, project, cfg))
    filename = f"{project.id}-{cfg.format}.jsonl"
    return Response(body, media_type="application/x-ndjson",
                    headers={"content-disposition": f'attachment; filename="{filename}"'})
