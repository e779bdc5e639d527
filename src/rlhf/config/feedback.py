"""Configs of `rlhf label serve|import|export`: the human-feedback web app and its files.

These commands never touch a model, so they share no fields with `TrainConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import tyro

from .base import check_fields

DEFAULT_DB = "sqlite:///feedback.db"
MODES = ("pairwise", "ranking", "thumbs")  # what an annotator does with a task's responses
RULES = ("majority", "every")  # how the labels of one task become exported rows


@dataclass(frozen=True)
class LabelServeConfig:
    """`rlhf label serve`: the labelling web app (FastAPI, server-side pages that work without
    JavaScript). On the first start it prints the admin token; keep it, only its hash is stored."""

    db: str = DEFAULT_DB  # database: a SQLite file path or URL (default), or postgresql+psycopg://user:pw@host/db
    host: str = "127.0.0.1"  # interface to listen on; 0.0.0.0 exposes the app to the network
    port: int = 8080  # TCP port (rlhf serve takes 8000, so the two run side by side)
    max_body_mb: float = 10.0  # requests with a larger body get 413 (uploads of files to import included)
    new_admin_token: bool = False  # print a fresh admin token and revoke the old one

    def __post_init__(self):
        check_fields(self, {"port": 0 <= self.port <= 65535, "max_body_mb": self.max_body_mb > 0})


@dataclass(frozen=True)
class LabelInviteConfig:
    """`rlhf label invite NAME`: a personal sign-in link for NAME, printed once (the store keeps only
    its hash; inviting NAME again replaces the old link). With --chat it signs NAME in to the chat
    page of `rlhf serve --db DB` (link URL/chat/join/TOKEN; NAME's thumbs go to PROJECT-thumbs, picks
    and arena votes to PROJECT-pairs); without it, to the labelling app's project PROJECT (link
    URL/join/TOKEN, the link the admin page's Invite button shows)."""

    name: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="NAME")] = ""  # (required) the person's name, as the dashboards show it
    db: str = DEFAULT_DB  # database (as for `label serve`; with --chat the one `rlhf serve --db` uses)
    chat: bool = False  # an invite to the chat page of `rlhf serve --db` instead of a labelling project
    project: str = ""  # labelling project (it must exist); with --chat the chat's project prefix (`rlhf serve --project`, default chat)
    url: str = ""  # the server's address as the invitee reaches it; default http://127.0.0.1:8000 with --chat (rlhf serve), else http://127.0.0.1:8080


@dataclass(frozen=True)
class LabelImportConfig:
    """`rlhf label import FILE`: tasks from a file into a project (created if missing). A
    {"prompt", "responses"} file (what `rlhf generate` writes without --label) gives tasks to
    label; comparison, ranking or binary files give labelled tasks: gold items or one annotator's
    labels. --format pandalm reads PandaLM's testset (three annotators' labels per pair)."""

    file: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="FILE")] = ""  # the file to import (JSONL[.gz], JSON, Parquet or a `datasets` dir)
    db: str = DEFAULT_DB  # database (as for `label serve`)
    project: str = "default"  # project name; created with --mode/--overlap/--gold-share when missing
    mode: Literal["pairwise", "ranking", "thumbs"] = "pairwise"  # new project: compare two responses, rank k, or thumbs on one
    overlap: int = 1  # new project: each task goes to this many distinct annotators
    gold_share: float = 0.0  # new project: share of an annotator's tasks drawn from gold items
    labels_as: Literal["gold", "annotator"] = "gold"  # labelled files: labels become gold answers or one annotator's labels
    annotator: str = "imported"  # labels_as=annotator: the annotator the labels belong to
    source: str = ""  # the model directory or run that wrote the responses (default: the file name)
    format: Literal["auto", "pandalm"] = "auto"  # auto: the rlhf readers' formats; pandalm: PandaLM's testset-v1.json
    skip_bad_rows: bool = False  # drop malformed rows (counted) instead of stopping at the first

    def __post_init__(self):
        check_fields(self, {"project": bool(self.project.strip()), "overlap": self.overlap >= 1,
                "gold_share": 0.0 <= self.gold_share < 1.0, "annotator": bool(self.annotator.strip())})


@dataclass(frozen=True)
class LabelExportConfig:
    """`rlhf label export`: a project's labels as training files that `rlhf rm` and `rlhf dpo`
    (comparisons), `rlhf rm` (rankings) and `rlhf dpo --loss kto` (binary) read."""

    db: str = DEFAULT_DB  # database (as for `label serve`)
    project: str = "default"  # project to export
    format: Literal["comparisons", "rankings", "binary"] = "comparisons"  # what to write
    out: str = "labels.jsonl"  # output JSONL file (written atomically)
    rule: Literal["majority", "every"] = "majority"  # majority: one row per task with a clear winner; every: one row per label
    drop_ties: bool = False  # majority: leave tie and both-bad votes out of the count instead of counting them against a winner
    min_agreement: float = 0.0  # majority: keep a task only when at least this share of its votes agree with the winner
    min_votes: int = 1  # majority: keep a task only when it has at least this many votes
    min_gold_accuracy: float = 0.0  # leave out annotators whose accuracy on gold items is below this (those without gold labels stay)
    strength_margin: float = 0.0  # comparisons: margin = this x (strength - 1) (Llama 2: bigger gap for "much better"); 0 = no margin
    include_gold: bool = False  # also write gold items, with their gold answers

    def __post_init__(self):
        check_fields(self, {"project": bool(self.project.strip()), "min_agreement": 0.0 <= self.min_agreement <= 1.0,
                "min_votes": self.min_votes >= 1, "min_gold_accuracy": 0.0 <= self.min_gold_accuracy <= 1.0,
                "strength_margin": self.strength_margin >= 0.0})


@dataclass(frozen=True)
class LabelBackupConfig:
    """`rlhf label backup OUT`: a consistent copy of the label store while it serves (SQLite: the
    online backup API; PostgreSQL: pg_dump's custom format), checked table by table."""

    out: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="OUT")] = ""  # (required) the backup file to write
    db: str = DEFAULT_DB  # database to back up (as for `label serve`)
    overwrite: bool = False  # replace an existing OUT


@dataclass(frozen=True)
class LabelRestoreConfig:
    """`rlhf label restore BACKUP`: a store from a `label backup` file (SQLite file, or pg_dump's
    custom format into PostgreSQL), checked table by table; an existing store with labels is
    replaced only with --overwrite."""

    backup: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="BACKUP")] = ""  # (required) the file `rlhf label backup` wrote
    db: str = DEFAULT_DB  # database to restore into (as for `label serve`)
    overwrite: bool = False  # replace a store that already holds tasks or labels


@dataclass(frozen=True)
class LabelMonitorConfig:
    """`rlhf label monitor`: what users of `rlhf serve --db` think of each served model version:
    thumbs-up share with its 95% interval (overall and per day), the arena's Bradley-Terry
    leaderboard, regenerate rate, answer length; an alert when the newest version is worse than
    the one before it."""

    db: str = DEFAULT_DB  # the feedback store `rlhf serve --db` writes
    project: str = "chat"  # the chat page's project prefix (`rlhf serve --project`): PROJECT-thumbs and PROJECT-pairs
    min_feedback: int = 20  # thumbs the newest version needs before the alert may fire
    out: str = ""  # also write the report as an HTML page here; "" = print only

    def __post_init__(self):
        check_fields(self, {"project": bool(self.project.strip()), "min_feedback": self.min_feedback >= 1})


@dataclass(frozen=True)
class LabelStatsConfig:
    """`rlhf label stats`: one line per project of the store (mode, tasks, live labels,
    annotators); with --by-model, what users of `rlhf serve --db` think of each served model
    version instead (the report of `rlhf label monitor`, for the chat projects of --project)."""

    db: str = DEFAULT_DB  # database (as for `label serve`)
    by_model: bool = False  # per served model version: thumbs-up share with its 95% interval, arena, regenerations, flagged share
    project: str = "chat"  # --by-model: the chat page's project prefix (`rlhf serve --project`)
    min_feedback: int = 20  # --by-model: thumbs the newest version needs before the alert may fire

    def __post_init__(self):
        check_fields(self, {"project": bool(self.project.strip()), "min_feedback": self.min_feedback >= 1})
