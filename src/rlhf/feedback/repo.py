"""Reads and writes of the feedback store. Routes and commands call these; the policy that
needs no database (which task next, statistics, aggregation) lives in pure modules.

Every function takes an open `Session` and leaves committing to the caller, except
`save_label` and `undo_last`, which commit so that an acknowledged answer is on disk.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from sqlalchemy import distinct, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rlhf.feedback.assign import TaskState, choose_task, spread_sql
from rlhf.feedback.security import hash_token, new_token
from rlhf.feedback.tables import (
    Annotator,
    Label,
    Project,
    Prompt,
    Response,
    RoundLabel,
    Setting,
    Task,
    TrainingRound,
    utcnow,
)

ADMIN_TOKEN = "admin_token_hash"
CSRF_SECRET = "csrf_secret"


# ---- settings ---------------------------------------------------------------------------------


def setting(s: Session, key: str) -> str | None:
    row = s.get(Setting, key)
    return row.value if row else None


def set_setting(s: Session, key: str, value: str) -> None:
    row = s.get(Setting, key)
    if row:
        row.value = value
    else:
        s.add(Setting(key=key, value=value))


def csrf_secret(s: Session) -> str:
    """The secret that signs CSRF tokens, created on first use."""
    if setting(s, CSRF_SECRET) is None:
        set_setting(s, CSRF_SECRET, new_token())
        s.commit()
    return setting(s, CSRF_SECRET)


def issue_admin_token(s: Session, rotate: bool = False) -> str | None:
    """A new admin token when there is none (or `rotate`), to be shown once; else None.
    Only its hash is stored, and a new one revokes the old."""
    if setting(s, ADMIN_TOKEN) is not None and not rotate:
        return None
    token = new_token()
    set_setting(s, ADMIN_TOKEN, hash_token(token))
    s.commit()
    return token


def is_admin(s: Session, token: str | None) -> bool:
    stored = setting(s, ADMIN_TOKEN)
    return bool(token) and stored is not None and hmac.compare_digest(hash_token(token), stored)


# ---- projects, prompts, tasks -----------------------------------------------------------------


def project_by_name(s: Session, name: str) -> Project | None:
    return s.scalar(select(Project).where(Project.name == name))


def create_project(s: Session, name: str, mode: str, overlap: int = 1, gold_share: float = 0.0) -> Project:
    project = Project(name=name, mode=mode, overlap=overlap, gold_share=gold_share)
    s.add(project)
    s.flush()
    return project


def add_prompt(s: Session, project: Project, content, responses: list[tuple[str, str]]) -> list[int]:
    """Store a prompt (text or a list of message dicts) and its (text, source) responses; their ids."""
    prompt = Prompt(project_id=project.id, content=content)
    s.add(prompt)
    s.flush()
    rows = [Response(prompt_id=prompt.id, text=text, source=source) for text, source in responses]
    s.add_all(rows)
    s.flush()
    return [r.id for r in rows]


def add_task(s: Session, project: Project, response_ids: list[int], gold: dict | None = None) -> Task:
    prompt_id = s.get(Response, response_ids[0]).prompt_id
    task = Task(project_id=project.id, prompt_id=prompt_id, response_ids=list(response_ids), gold=gold)
    s.add(task)
    s.flush()
    return task


def responses_of(s: Session, task: Task) -> list[Response]:
    """The task's responses in stored order."""
    by_id = {r.id: r for r in s.scalars(select(Response).where(Response.id.in_(task.response_ids)))}
    return [by_id[i] for i in task.response_ids]


# ---- annotators -------------------------------------------------------------------------------


def invite(s: Session, project: Project, name: str) -> str:
    """A fresh sign-in token for `name` (created if new); an older token of theirs stops working."""
    annotator = annotator_by_name(s, project, name)
    if annotator is None:
        annotator = Annotator(project_id=project.id, name=name)
        s.add(annotator)
    token = new_token()
    annotator.token_hash = hash_token(token)
    s.flush()
    return token


def annotator_by_name(s: Session, project: Project, name: str, create: bool = False) -> Annotator | None:
    annotator = s.scalar(select(Annotator).where(Annotator.project_id == project.id, Annotator.name == name))
    if annotator is None and create:
        annotator = Annotator(project_id=project.id, name=name)
        s.add(annotator)
        s.flush()
    return annotator


def annotator_by_token(s: Session, token: str | None) -> Annotator | None:
    if not token:
        return None
    return s.scalar(select(Annotator).where(Annotator.token_hash == hash_token(token)))


# ---- what to label next -----------------------------------------------------------------------


@dataclass(frozen=True)
class Queue:
    """One annotator's view of their project: what they have done and what is open to them."""

    states: list[TaskState]  # the front of the queue: the first regular and the first gold task
    seen: set[int]  # tasks answered or skipped by the annotator
    answered: int
    gold_answered: int
    left: int  # tasks still open to the annotator


def queue(s: Session, annotator: Annotator, project: Project) -> Queue:
    """The database does the counting and ordering (assign's rules, `spread_sql`), so a
    request costs the same with ten tasks or a hundred thousand."""
    answers = (select(Label.task_id, func.count(distinct(Label.annotator_id)).label("n"))
               .where(Label.undone_at.is_(None), Label.outcome != "skip").group_by(Label.task_id).subquery())
    n = func.coalesce(answers.c.n, 0)
    mine = select(Label.task_id).where(Label.annotator_id == annotator.id, Label.undone_at.is_(None))
    open_tasks = (select(Task.id, Task.gold.is_not(None), n).outerjoin(answers, answers.c.task_id == Task.id)
                  .where(Task.project_id == project.id, Task.id.not_in(mine)))
    regular = open_tasks.where(Task.gold.is_(None), n < project.overlap)
    gold = open_tasks.where(Task.gold.is_not(None))
    order = spread_sql(annotator.id, Task.id)
    front = [*s.execute(regular.order_by(n.desc(), order).limit(1)), *s.execute(gold.order_by(order).limit(1))]
    left = sum(s.scalar(select(func.count()).select_from(q.subquery())) for q in (regular, gold))
    done = s.execute(select(Label.task_id, Label.outcome, Task.gold.is_not(None)).join(Task, Task.id == Label.task_id)
                     .where(Label.annotator_id == annotator.id, Label.undone_at.is_(None))).all()
    answered = [is_gold for _, outcome, is_gold in done if outcome != "skip"]
    return Queue([TaskState(t, bool(g), c) for t, g, c in front], {t for t, _, _ in done}, len(answered),
                 sum(answered), left)


def next_task(s: Session, annotator: Annotator, project: Project) -> tuple[Task | None, Queue]:
    q = queue(s, annotator, project)
    task_id = choose_task(q.states, annotator.id, q.seen, q.gold_answered, q.answered, project.overlap,
                          project.gold_share)
    return (s.get(Task, task_id) if task_id is not None else None), q


def can_open(s: Session, annotator: Annotator, task: Task | None) -> bool:
    """An annotator may see a task of their own project that is open to them or that they
    labelled before (to change an undone answer); nothing of another project."""
    if task is None or task.project_id != annotator.project_id:
        return False
    mine = s.scalar(select(Label.id).where(Label.task_id == task.id, Label.annotator_id == annotator.id).limit(1))
    if mine is not None or task.gold is not None:
        return True
    answered = s.scalar(select(func.count(distinct(Label.annotator_id))).where(
        Label.task_id == task.id, Label.undone_at.is_(None), Label.outcome != "skip"))
    return answered < s.get(Project, task.project_id).overlap


# ---- labels -----------------------------------------------------------------------------------


def begin_write(s: Session) -> None:
    """Start a write transaction. On SQLite, take the write lock up front (BEGIN IMMEDIATE):
    a transaction that reads first and writes later fails at once with "database is locked"
    when another writer committed in between, instead of waiting its turn."""
    s.commit()  # end the read transaction the request has open (objects stay loaded)
    if s.get_bind().dialect.name == "sqlite":
        s.connection().exec_driver_sql("BEGIN IMMEDIATE")


class Refused(Exception):
    """A submission the store turns down: `status` is the HTTP status a route should answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def save_label(s: Session, annotator: Annotator, task: Task, request_id: str, **answer) -> tuple[Label, bool]:
    """Store an answer and commit. A second call with the same request id returns the first
    label unchanged (created=False): retries after a lost response are safe. Raises Refused
    when the annotator has a live answer on the task already (409) or the task is no longer
    open to them (403). The checks run inside the write transaction, with the task row
    locked on PostgreSQL (SQLite's write lock covers it), so concurrent submissions never
    give a task more than `overlap` annotators."""
    begin_write(s)
    existing = _by_request(s, annotator, request_id)
    if existing is not None:
        return existing, False
    if s.get_bind().dialect.name != "sqlite":
        s.execute(select(Task.id).where(Task.id == task.id).with_for_update())
    if s.scalar(select(Label.id).where(Label.task_id == task.id, Label.annotator_id == annotator.id,
                                       Label.undone_at.is_(None)).limit(1)) is not None:
        s.rollback()
        raise Refused(409, "you already answered this task; undo your last label to change it")
    if not can_open(s, annotator, task):
        s.rollback()
        raise Refused(403, "this task is no longer open to you (other annotators filled it)")
    label = Label(task_id=task.id, annotator_id=annotator.id, request_id=request_id, **answer)
    s.add(label)
    try:
        s.commit()
    except IntegrityError:  # the same request raced in on another connection and won
        s.rollback()
        return _by_request(s, annotator, request_id), False
    return label, True


def _by_request(s: Session, annotator: Annotator, request_id: str) -> Label | None:
    return s.scalar(select(Label).where(Label.annotator_id == annotator.id, Label.request_id == request_id))


def undo_last(s: Session, annotator: Annotator) -> Label | None:
    """Withdraw the annotator's newest live label (answer or skip) and commit; it is kept, marked undone."""
    begin_write(s)
    label = s.scalar(select(Label).where(Label.annotator_id == annotator.id, Label.undone_at.is_(None))
                     .order_by(Label.id.desc()).limit(1))
    if label is not None:
        label.undone_at = utcnow()
    s.commit()
    return label


def live_labels(s: Session, project: Project, include_skips: bool = False) -> list[Label]:
    query = (select(Label).join(Task, Task.id == Label.task_id)
             .where(Task.project_id == project.id, Label.undone_at.is_(None)).order_by(Label.id))
    if not include_skips:
        query = query.where(Label.outcome != "skip")
    return list(s.scalars(query))


# ---- training rounds (`rlhf iterate`): which labels trained which model -----------------------


def watermarks(s: Session, series: str) -> dict[int, int]:
    """project id -> the largest label id a round of `series` has read from it (its watermark)."""
    rows = s.execute(select(RoundLabel.project_id, func.max(RoundLabel.label_id))
                     .join(TrainingRound, TrainingRound.id == RoundLabel.round_id)
                     .where(TrainingRound.series == series).group_by(RoundLabel.project_id)).all()
    return {project_id: label_id for project_id, label_id in rows}


def labels_unread(s: Session, project: Project, series: str) -> list[Label]:
    """The project's live answers (no skips) that no round of `series` has read, oldest first.

    Reads "not yet read" from the rounds' own records rather than "id above the watermark": on
    PostgreSQL two annotators' transactions can commit out of id order, and a label committed
    after a round read a larger id would sit below the watermark and never train anything."""
    read = (select(RoundLabel.label_id).join(TrainingRound, TrainingRound.id == RoundLabel.round_id)
            .where(TrainingRound.series == series, RoundLabel.project_id == project.id))
    return list(s.scalars(select(Label).join(Task, Task.id == Label.task_id)
                          .where(Task.project_id == project.id, Label.undone_at.is_(None), Label.outcome != "skip",
                                 Label.id.not_in(read)).order_by(Label.id)))


def round_by_run_dir(s: Session, run_dir: str) -> TrainingRound | None:
    return s.scalar(select(TrainingRound).where(TrainingRound.run_dir == run_dir))


def record_round(s: Session, series: str, round_number: int, run_dir: str, policy: str, parent_policy: str,
                 method: str, result: dict | None, labels: list[tuple[int, int, bool]]) -> TrainingRound:
    """A training round and the (label id, project id, used) it read; the caller commits."""
    row = TrainingRound(series=series, round=round_number, run_dir=run_dir, policy=policy,
                        parent_policy=parent_policy, method=method, result=result)
    s.add(row)
    s.flush()
    s.add_all(RoundLabel(round_id=row.id, label_id=label_id, project_id=project_id, used=used)
              for label_id, project_id, used in labels)
    s.flush()
    return row


def rounds_of(s: Session, series: str) -> list[TrainingRound]:
    return list(s.scalars(select(TrainingRound).where(TrainingRound.series == series).order_by(TrainingRound.id)))


def labels_of_round(s: Session, training_round: TrainingRound) -> list[RoundLabel]:
    return list(s.scalars(select(RoundLabel).where(RoundLabel.round_id == training_round.id)
                          .order_by(RoundLabel.label_id)))
