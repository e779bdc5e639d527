"""What the dashboard shows, gathered from the store: throughput per annotator, agreement,
accuracy on gold items and the models' leaderboard. The arithmetic is in `stats` and
`aggregate`; this module only collects the votes and battles."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from itertools import combinations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rlhf.feedback import aggregate, repo, stats
from rlhf.feedback.export import votes_of
from rlhf.feedback.tables import Annotator, Label, Project, Response, Task


@dataclass
class Dashboard:
    annotators: list[dict]  # name, labels, skips, undone, gold accuracy, labels per hour, median seconds per label
    kappa: list[dict]  # a, b, items both labelled, Cohen's kappa
    alpha: float  # Krippendorff's alpha over every task with two or more answers (nominal)
    leaderboard: list[dict]  # see stats.leaderboard
    tasks: int
    labels: int
    timeline: dict[str, list]  # annotator name -> label times, for the throughput plot


def battles(s: Session, project: Project, labels: list[Label]) -> list[stats.Battle]:
    """Pairwise answers as battles between the models that wrote the two responses.
    Pairs from one model say nothing about models and are left out."""
    tasks = dict(s.execute(select(Task.id, Task.response_ids).where(Task.project_id == project.id)).all())
    source = dict(s.execute(select(Response.id, Response.source)
                            .where(Response.id.in_({r for ids in tasks.values() for r in ids}))).all())
    out = []
    for label in labels:
        ids = tasks[label.task_id]
        if len(ids) != 2 or label.outcome not in ("win", "tie", "both_bad"):
            continue
        a, b = source[ids[0]], source[ids[1]]
        if a != b:
            out.append((a, b, 0.5 if label.outcome != "win" else float(label.winner_id == ids[0])))
    return out


def annotator_rows(labels: list[Label], everything: list[Label], names: dict[int, str],
                   accuracy: dict[int, tuple[int, int]], undone: dict[int, int],
                   imported: set[int]) -> tuple[list[dict], dict]:
    """Per annotator (by name): labels, skips, undos, pace and gold accuracy; and label times.
    Annotators whose labels were imported have no pace: their times are the import's."""
    rows, timeline = [], {}
    for annotator_id, name in sorted(names.items(), key=lambda kv: kv[1]):
        times = sorted(l.created_at for l in labels if l.annotator_id == annotator_id)
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
        span_h = (times[-1] - times[0]).total_seconds() / 3600 if len(times) > 1 else 0
        right, total = accuracy.get(annotator_id, (0, 0))
        rows.append({"name": name, "labels": len(times),
                     "skips": sum(l.annotator_id == annotator_id and l.outcome == "skip" for l in everything),
                     "undone": undone.get(annotator_id, 0),
                     "gold_right": right, "gold_total": total, "gold_accuracy": right / total if total else None,
                     "per_hour": len(times) / span_h if span_h and annotator_id not in imported else None,
                     "median_s": statistics.median(gaps) if gaps and annotator_id not in imported else None})
        timeline[name] = times
    return rows, timeline


def agreement(labels: list[Label], response_ids: dict[int, list], names: dict[int, str]) -> tuple[list[dict], float]:
    """Cohen's kappa for each pair of annotators over the tasks both answered, and
    Krippendorff's alpha over every task with two or more answers."""
    by_task: dict[int, dict[int, object]] = {}
    for vote in votes_of(labels):
        by_task.setdefault(vote.task_id, {})[vote.annotator_id] = aggregate.category(vote, response_ids[vote.task_id])
    kappa = []
    for a, b in combinations(sorted(names, key=names.get), 2):
        both = [(answers[a], answers[b]) for answers in by_task.values() if a in answers and b in answers]
        if both:
            kappa.append({"a": names[a], "b": names[b], "n": len(both),
                          "kappa": stats.cohen_kappa([x for x, _ in both], [y for _, y in both])})
    return kappa, stats.krippendorff_alpha([list(answers.values()) for answers in by_task.values()])


def build(s: Session, project: Project, rounds: int = 200) -> Dashboard:
    """Everything the dashboard shows; rounds=0 skips the leaderboard's bootstrap (and the leaderboard)."""
    everything = repo.live_labels(s, project, include_skips=True)
    labels = [l for l in everything if l.outcome != "skip"]
    people = s.execute(select(Annotator.id, Annotator.name, Annotator.token_hash)
                       .where(Annotator.project_id == project.id)).all()
    names = {a.id: a.name for a in people}
    tasks = s.execute(select(Task.id, Task.response_ids, Task.gold).where(Task.project_id == project.id)).all()
    gold = {t.id: t.gold for t in tasks if t.gold is not None}
    undone = dict(s.execute(select(Label.annotator_id, func.count()).where(
        Label.undone_at.is_not(None), Label.annotator_id.in_(names)).group_by(Label.annotator_id)).all())
    rows, timeline = annotator_rows(labels, everything, names, aggregate.gold_accuracy(votes_of(labels), gold), undone,
                                    {a.id for a in people if a.token_hash is None})
    kappa, alpha = agreement(labels, {t.id: t.response_ids for t in tasks}, names)
    board = stats.leaderboard(battles(s, project, labels), rounds=rounds) if rounds else []
    return Dashboard(rows, kappa, alpha, board, len(tasks), len(labels), timeline)
