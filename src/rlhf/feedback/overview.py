"""`rlhf label stats`: what the store holds, one line per project; with --by-model, the
per-version report of rlhf.feedback.monitor (the same computation `label monitor` prints)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rlhf.feedback import monitor
from rlhf.feedback.tables import Annotator, Label, Project, Task


def project_rows(s: Session) -> list[dict]:
    """Per project: name, mode, tasks, live labels (skips left out) and annotators."""
    tasks = dict(s.execute(select(Task.project_id, func.count()).group_by(Task.project_id)).all())
    labels = dict(s.execute(select(Task.project_id, func.count()).select_from(Label).join(Task, Label.task_id == Task.id)
                            .where(Label.undone_at.is_(None), Label.outcome != "skip").group_by(Task.project_id)).all())
    people = dict(s.execute(select(Annotator.project_id, func.count()).group_by(Annotator.project_id)).all())
    return [{"project": p.name, "mode": p.mode, "tasks": tasks.get(p.id, 0), "labels": labels.get(p.id, 0),
             "annotators": people.get(p.id, 0)} for p in s.scalars(select(Project).order_by(Project.id))]


def text_table(rows: list[dict]) -> str:
    lines = [f"{'project':<32} {'mode':<9} {'tasks':>7} {'labels':>7} {'annotators':>10}"]
    lines += [f"{r['project'][-32:]:<32} {r['mode']:<9} {r['tasks']:>7} {r['labels']:>7} {r['annotators']:>10}"
              for r in rows]
    return "\n".join(lines if rows else lines + ["(no project yet)"])


def run(cfg) -> str:
    from rlhf.feedback.store import open_store

    with open_store(cfg.db)() as s:
        if cfg.by_model:
            print(monitor.text_report(monitor.monitor(s, cfg.project, cfg.min_feedback, cfg.db)))
        else:
            print(text_table(project_rows(s)))
    return "stdout"
