"""The labels the store got since the last round, as comparisons, with the label ids behind them.

`rlhf iterate --project NAME` reads the pairwise projects NAME (the labelling app, and labels
imported there, e.g. an AI judge's with `rlhf label import --labels-as annotator`) and
NAME-pairs (the chat page's regenerate and arena votes). A round reads the live answers no earlier
round of NAME read (`repo.labels_unread`, from the rounds' records of the label ids they read, so
a label committed out of id order is not skipped); each project's watermark, the largest label
id earlier rounds read (`repo.watermarks`), is reported beside them. The labels combine into
comparisons by `rlhf.feedback.aggregate`'s rules, as `rlhf label export` does, applied to the new
labels; gold items only measure annotators (`min_gold_accuracy` judges an annotator on all
their gold answers, old and new).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..config import IterateConfig
from ..feedback import aggregate, repo
from ..feedback.export import votes_of
from ..feedback.tables import Annotator, Project, Prompt, Response, Task

PAIRS_SUFFIX = "-pairs"  # the chat page's comparisons go to project `<prefix>-pairs` (rlhf.serve.chat)


@dataclass(frozen=True)
class SeenLabel:
    """One new label a round read."""

    id: int
    project_id: int
    project: str
    annotator: str
    used: bool  # it counted towards an exported comparison


@dataclass
class Collected:
    rows: list[dict]  # comparisons {"prompt", "chosen", "rejected"}
    labels: list[SeenLabel]
    watermarks_before: dict[str, int]  # project name -> the largest label id earlier rounds read (0: none)
    not_read: dict[str, str]  # project name -> why its labels were not read

    def to_json(self) -> dict:
        return {"rows": len(self.rows), "labels": [asdict(label) for label in self.labels],
                "watermarks_before": self.watermarks_before, "not_read": self.not_read}

    @classmethod
    def from_json(cls, data: dict, rows: list[dict]) -> "Collected":
        return cls(rows, [SeenLabel(**label) for label in data["labels"]], data["watermarks_before"], data["not_read"])

    def sources(self) -> dict[str, dict[str, int]]:
        """"project/annotator" -> {"read": n, "used": n}."""
        out: dict[str, dict[str, int]] = {}
        for label in self.labels:
            counts = out.setdefault(f"{label.project}/{label.annotator}", {"read": 0, "used": 0})
            counts["read"] += 1
            counts["used"] += label.used
        return out

    def watermarks_after(self) -> dict[str, int]:
        after = dict(self.watermarks_before)
        for label in self.labels:
            after[label.project] = max(after.get(label.project, 0), label.id)
        return after


def projects_of(s: Session, name: str) -> list[Project]:
    found = [repo.project_by_name(s, n) for n in (name, name + PAIRS_SUFFIX)]
    return [p for p in found if p is not None]


def collect(s: Session, cfg: IterateConfig) -> Collected:
    projects = projects_of(s, cfg.project)
    if not projects:
        raise ValueError(f"the store {cfg.db} has no project {cfg.project!r} or {cfg.project + PAIRS_SUFFIX!r} "
                         f"(the labelling app's and `rlhf serve --project {cfg.project}`'s comparisons)")
    marks = repo.watermarks(s, cfg.project)
    rows: list[dict] = []
    seen: list[SeenLabel] = []
    before, not_read = {}, {}
    for project in projects:
        if project.mode != "pairwise":
            not_read[project.name] = f"a {project.mode} project; rlhf iterate trains on comparisons"
            continue
        before[project.name] = marks.get(project.id, 0)
        project_rows, project_seen = _collect_project(s, project, cfg)
        rows += project_rows
        seen += project_seen
    return Collected(rows, seen, before, not_read)


def _collect_project(s: Session, project: Project, cfg: IterateConfig):
    new = repo.labels_unread(s, project, cfg.project)
    if not new:
        return [], []
    task_ids = {label.task_id for label in new}
    tasks = {t.id: t for t in s.scalars(select(Task).where(Task.id.in_(task_ids)))}
    gold = {t.id: t.gold for t in tasks.values() if t.gold is not None}
    trusted = _trusted_annotators(s, project, cfg.min_gold_accuracy)
    every_vote = votes_of(new)
    counted = [v.task_id not in gold and (trusted is None or v.annotator_id in trusted) for v in every_vote]
    votes = [v for v, keep in zip(every_vote, counted) if keep]
    response_ids = {t.id: list(t.response_ids) for t in tasks.values()}
    pairs = aggregate.pairs(votes, response_ids, cfg.rule, cfg.drop_ties)

    prompts = dict(s.execute(select(Prompt.id, Prompt.content)
                             .where(Prompt.id.in_({t.prompt_id for t in tasks.values()}))).all())
    texts = dict(s.execute(select(Response.id, Response.text)
                           .where(Response.id.in_({r for ids in response_ids.values() for r in ids}))).all())
    rows = [{"prompt": prompts[tasks[p.task_id].prompt_id], "chosen": texts[p.chosen], "rejected": texts[p.rejected]}
            for p in pairs]

    winners = {(p.task_id, p.chosen) for p in pairs}  # under `every`, each win is its own pair
    names = dict(s.execute(select(Annotator.id, Annotator.name)
                           .where(Annotator.id.in_({label.annotator_id for label in new}))).all())
    seen = [SeenLabel(label.id, project.id, project.name, names[label.annotator_id],
                      keep and label.outcome == "win" and (label.task_id, label.winner_id) in winners)
            for label, keep in zip(new, counted)]
    return rows, seen


def _trusted_annotators(s: Session, project: Project, min_accuracy: float) -> set[int] | None:
    """Annotators whose accuracy on the project's gold items reaches `min_accuracy`; None = everyone."""
    if min_accuracy <= 0:
        return None
    gold = {t.id: t.gold for t in s.scalars(select(Task).where(Task.project_id == project.id, Task.gold.is_not(None)))}
    all_votes = votes_of(repo.live_labels(s, project))
    return {v.annotator_id for v in aggregate.trusted(all_votes, gold, min_accuracy)}
