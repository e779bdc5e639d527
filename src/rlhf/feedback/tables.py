"""The feedback store's tables (SQLAlchemy 2 declarative models).

A project holds prompts; a prompt holds candidate responses (each with the model directory or
run that wrote it); a task shows one prompt and some of its responses (2 for pairwise, k for a
ranking, 1 for thumbs). Annotators belong to one project and write labels on its tasks. Gold
tasks carry a known answer, in the same shape as a label, to measure annotators against.

A label is never deleted: undo sets `undone_at`, so an acknowledged submission can always be
traced. `(annotator_id, request_id)` is unique, which makes a retried submission idempotent.
Times are naive UTC datetimes (SQLite has no time zones).

The schema is created and changed by Alembic migrations (`rlhf/feedback/migrations`), never by
`create_all`; a change here needs a new revision there.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Setting(Base):
    """Server-wide values: the admin token's hash and the secret that signs CSRF tokens."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    mode: Mapped[str] = mapped_column(String(16))  # pairwise | ranking | thumbs
    overlap: Mapped[int] = mapped_column(Integer, default=1)  # distinct annotators per task
    gold_share: Mapped[float] = mapped_column(Float, default=0.0)  # share of an annotator's tasks that are gold
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Prompt(Base):
    __tablename__ = "prompts"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    content: Mapped[Any] = mapped_column(JSON)  # a string, or a list of {"role", "content"} messages
    responses: Mapped[list["Response"]] = relationship(order_by="Response.id")


class Response(Base):
    __tablename__ = "responses"
    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(500), default="")  # model directory or run that wrote it


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    response_ids: Mapped[list] = mapped_column(JSON)  # ids of the responses shown, in stored order
    gold: Mapped[Optional[dict]] = mapped_column(JSON(none_as_null=True), nullable=True)  # the known answer (label-shaped), or None
    prompt: Mapped[Prompt] = relationship()


class Annotator(Base):
    __tablename__ = "annotators"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[Optional[str]] = mapped_column(String(64), unique=True, nullable=True)  # None: imported labels only
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("project_id", "name"),)


class Label(Base):
    """One annotator's answer on one task. `outcome` says which fields hold it:
    win (winner_id, strength 1 slightly / 2 better / 3 much better), tie, both_bad,
    ranking (ranking: response ids best first), thumbs (thumbs), skip (nothing)."""

    __tablename__ = "labels"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"), index=True)
    request_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    undone_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))
    winner_id: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    strength: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    ranking: Mapped[Optional[list]] = mapped_column(JSON(none_as_null=True), nullable=True)
    thumbs: Mapped[Optional[bool]] = mapped_column(Boolean, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    __table_args__ = (UniqueConstraint("annotator_id", "request_id"),)


class TrainingRound(Base):
    """One round of `rlhf iterate`: the policy it trained, from which parent, and its evaluation.
    `series` is the iterate `--project` name; the labels that trained it are its RoundLabels."""

    __tablename__ = "training_rounds"
    id: Mapped[int] = mapped_column(primary_key=True)
    series: Mapped[str] = mapped_column(String(200), index=True)
    round: Mapped[int] = mapped_column(Integer)
    run_dir: Mapped[str] = mapped_column(String(1000), unique=True)
    policy: Mapped[str] = mapped_column(String(1000))  # the model directory the round trained
    parent_policy: Mapped[str] = mapped_column(String(1000))
    method: Mapped[str] = mapped_column(String(32))  # rm+ppo | dpo
    result: Mapped[Optional[dict]] = mapped_column(JSON(none_as_null=True), nullable=True)  # the evaluation against the parent
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class RoundLabel(Base):
    """A label a training round read. `used`: it counted towards an exported comparison (a tie, or
    a vote outvoted under the majority rule, was read but trained nothing). The largest label id
    per project over a series' rounds is that project's watermark: the next round reads above it."""

    __tablename__ = "round_labels"
    round_id: Mapped[int] = mapped_column(ForeignKey("training_rounds.id"), primary_key=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("labels.id"), primary_key=True, index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    used: Mapped[bool] = mapped_column(Boolean)


class ResponseScore(Base):
    """A safety scorer's verdict on a served answer (`rlhf serve --monitor-scorer`): its score
    and whether it fell below the threshold the server was given. The monitor reports the share
    flagged per model version; the label itself stays the users' alone."""

    __tablename__ = "response_scores"
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id"), primary_key=True)
    scorer: Mapped[str] = mapped_column(String(500), primary_key=True)  # the scorer's spec
    score: Mapped[float] = mapped_column(Float)
    flagged: Mapped[bool] = mapped_column(Boolean)  # score < the server's --monitor-threshold
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
