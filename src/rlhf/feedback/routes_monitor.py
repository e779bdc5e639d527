"""The admin page /admin/monitor: what users of `rlhf serve --db` think of each served model
version (rlhf.feedback.monitor computes it; this module only shows it), with the per-day plot
inline and the alert at the top. A page that finds the alert also writes it to the log."""

from __future__ import annotations

import base64
import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from rlhf.feedback import monitor, plots
from rlhf.feedback.tables import Project
from rlhf.feedback.web import db, render, require_admin

router = APIRouter(prefix="/admin")
log = logging.getLogger("rlhf.feedback.monitor")
SUFFIXES = ("-thumbs", "-pairs")  # the chat page's projects: <prefix>-thumbs and <prefix>-pairs


def chat_prefixes(s: Session) -> list[str]:
    """The prefixes of the chat feedback projects in the store (`rlhf serve --project`)."""
    names = s.scalars(select(Project.name)).all()
    return sorted({n.removesuffix(x) for n in names for x in SUFFIXES if n.endswith(x)})


@router.get("/monitor", response_class=HTMLResponse)
def monitor_page(request: Request, project: str = "chat", min_feedback: int = 20, s: Session = Depends(db)):
    require_admin(request, s)
    url = s.get_bind().url.render_as_string(hide_password=True)  # for the `rlhf iterate --db` the alert names
    report = monitor.monitor(s, project, max(min_feedback, 1), url)
    if report["alert"]:
        log.warning("monitor %s: ALERT %s", project, report["alert"])
    ranked = sorted((r for r in report["versions"] if r["thumbs"]), key=lambda r: -r["up_share"])
    plot = base64.b64encode(plots.satisfaction_png(report["versions"])).decode()
    return render(request, "monitor.html", report=report, ranked=ranked, plot=plot, prefixes=chat_prefixes(s),
                  min_feedback=min_feedback)
