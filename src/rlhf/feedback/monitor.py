"""What users think of each served model version: `rlhf label monitor` (the seeds' "continuous
evaluation and monitoring" step).

`rlhf serve --db` keeps the chat page's feedback in projects `<project>-thumbs` (a thumb on one
answer) and `<project>-pairs` (regenerate-and-pick: two answers of one version; arena: answers of
two versions), every answer stored with the model directory that wrote it (its version). From
them, per version, in the order versions first got feedback:

- thumbs-up share with its 95% Wilson interval, overall and per day;
- arena: a Bradley-Terry leaderboard over the versions' battles (rlhf.feedback.stats.leaderboard);
- regenerate rate: the share of the version's feedback events that asked for another answer;
- mean answer length in words;
- with a safety scorer (`rlhf serve --monitor-scorer`, which stores a score per answer in
  `response_scores`): the share of the version's scored answers it flagged, with its interval.

`feedback_counts` is the cheap part (one SQL aggregate: thumbs and thumbs-up per version) that
`rlhf serve`'s /metrics reads at every scrape; `monitor` computes everything, for the
`label monitor` and `label stats --by-model` commands and the admin page /admin/monitor.

The alert: when the newest version's thumbs-up share (on at least `min_feedback` thumbs) is below
the lower end of the previous version's interval, it is worse with 95% confidence, and the report
says so with the `rlhf iterate` command that retrains from the feedback collected since.
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from rlhf.feedback import repo
from rlhf.feedback.stats import leaderboard
from rlhf.feedback.tables import Label, Prompt, Response, ResponseScore, Task
from rlhf.intervals import wilson_interval


@dataclass
class Version:
    """One served model version's feedback."""

    name: str  # the model directory that wrote its answers
    first_seen: object = None  # time of its first feedback
    first_thumb: object = None  # time of its first thumb: the versions' order for the alert
    up: int = 0
    thumbs: int = 0
    regenerations: int = 0
    words: list[int] = field(default_factory=list)
    days: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0]))  # day -> [up, thumbs]

    def seen(self, when) -> None:
        self.first_seen = when if self.first_seen is None else min(self.first_seen, when)

    def thumb(self, up: bool, when) -> None:
        self.seen(when)
        self.first_thumb = when if self.first_thumb is None else min(self.first_thumb, when)
        self.up += int(up)
        self.thumbs += 1
        day = self.days[when.date().isoformat()]
        day[0] += int(up)
        day[1] += 1

    def row(self) -> dict:
        events = self.thumbs + self.regenerations
        return {**share_row(self.name, self.up, self.thumbs, self.first_thumb),
                "regenerate_rate": self.regenerations / events if events else None,
                "mean_words": sum(self.words) / len(self.words) if self.words else None,
                "first_seen": self.first_seen.isoformat() if self.first_seen else None,
                "days": {day: share_row(day, up, n) for day, (up, n) in sorted(self.days.items())}}


def share_row(name: str, up: int, thumbs: int, first_thumb=None) -> dict:
    """A version's (or a day's) thumbs-up share with its 95% Wilson interval."""
    low, high = wilson_interval(up, thumbs)
    return {"version": name, "up": up, "thumbs": thumbs, "up_share": up / thumbs if thumbs else None,
            "up_low": low, "up_high": high, "first_thumb": first_thumb}


def feedback_counts(s: Session, project: str = "chat") -> list[dict]:
    """Thumbs per version of `<project>-thumbs`, in one aggregate query (cheap enough for every
    /metrics scrape): `share_row`s in the order the versions got their first thumb."""
    thumbs_project = repo.project_by_name(s, f"{project}-thumbs")
    if thumbs_project is None:
        return []
    answer_id = Task.response_ids[0].as_integer()  # a thumbs task shows one answer
    query = (select(Response.source, func.count(Label.id), func.sum(case((Label.thumbs.is_(True), 1), else_=0)),
                    func.min(Label.created_at))
             .select_from(Label).join(Task, Label.task_id == Task.id).join(Response, Response.id == answer_id)
             .where(Task.project_id == thumbs_project.id, Label.undone_at.is_(None), Label.outcome == "thumbs",
                    Label.thumbs.is_not(None))
             .group_by(Response.source))
    rows = [share_row(source, int(up), int(n), first) for source, n, up, first in s.execute(query)]
    return sorted(rows, key=lambda r: r["first_thumb"])


def _live_labels(s: Session, project_name: str):
    """(label, the task's responses in stored order) of the project's live labels, oldest first."""
    project = repo.project_by_name(s, project_name)
    if project is None:
        return
    # Two queries in all, not two per label: the page reads thousands of labels at each view.
    responses = {r.id: r for r in s.scalars(select(Response).join(Prompt, Prompt.id == Response.prompt_id)
                                            .where(Prompt.project_id == project.id))}
    rows = s.execute(select(Label, Task.response_ids).join(Task, Label.task_id == Task.id)
                     .where(Task.project_id == project.id, Label.undone_at.is_(None)).order_by(Label.id))
    for label, response_ids in rows:
        yield label, [responses[i] for i in response_ids]


def monitor(s: Session, project: str = "chat", min_feedback: int = 20, db: str = "feedback.db") -> dict:
    """The per-version report of the chat feedback of `project` (see the module docstring):
    {"versions": [...], "leaderboard": [...], "alert": str | None}."""
    versions: dict[str, Version] = {}

    def version(name: str) -> Version:
        return versions.setdefault(name, Version(name))

    for label, (answer, *_) in _live_labels(s, f"{project}-thumbs"):
        if label.outcome != "thumbs" or label.thumbs is None:
            continue
        v = version(answer.source)
        v.thumb(label.thumbs, label.created_at)
        v.words.append(len(answer.text.split()))
    battles = []
    for label, responses in _live_labels(s, f"{project}-pairs"):
        if len(responses) != 2 or label.outcome not in ("win", "tie", "both_bad"):
            continue
        a, b = responses
        for response in responses:
            version(response.source).seen(label.created_at)
            version(response.source).words.append(len(response.text.split()))
        if a.source == b.source:  # the user asked the same version for another answer
            version(a.source).regenerations += 1
        else:
            battles.append((a.source, b.source, 0.5 if label.outcome != "win" else float(label.winner_id == a.id)))
    ordered = sorted(versions.values(), key=lambda v: v.first_seen)
    rows = [v.row() for v in ordered]
    flags = flagged_counts(s, project)
    for row in rows:
        row["flagged"] = flags.get(row["version"], {})
    return {"project": project, "versions": rows, "leaderboard": leaderboard(battles) if battles else [],
            "scorers": sorted({name for by_scorer in flags.values() for name in by_scorer}),
            "alert": alert(rows, min_feedback, db, project)}


def flagged_counts(s: Session, project: str = "chat") -> dict[str, dict[str, dict]]:
    """version -> scorer -> {"flagged", "scored", "share", "low", "high"}: the answers of the chat
    projects that a safety scorer scored (`rlhf serve --monitor-scorer`), and the share it flagged
    with its 95% Wilson interval."""
    ids = [p.id for p in (repo.project_by_name(s, f"{project}{x}") for x in ("-thumbs", "-pairs")) if p is not None]
    query = (select(Response.source, ResponseScore.scorer, func.count(),
                    func.sum(case((ResponseScore.flagged.is_(True), 1), else_=0)))
             .select_from(ResponseScore).join(Response, Response.id == ResponseScore.response_id)
             .join(Prompt, Prompt.id == Response.prompt_id).where(Prompt.project_id.in_(ids))
             .group_by(Response.source, ResponseScore.scorer))
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    for source, scorer, scored, flagged in s.execute(query) if ids else ():
        low, high = wilson_interval(int(flagged), int(scored))
        out[source][scorer] = {"flagged": int(flagged), "scored": int(scored), "share": int(flagged) / scored,
                               "low": low, "high": high}
    return dict(out)


def alert(rows: list[dict], min_feedback: int, db: str, project: str) -> str | None:
    """The newest version (by first thumb) against the one before it (see the module docstring), on
    `share_row`s from `monitor` or `feedback_counts`; None when there is nothing to say."""
    rated = sorted((r for r in rows if r["thumbs"]), key=lambda r: r["first_thumb"])
    if len(rated) < 2 or rated[-1]["thumbs"] < min_feedback:
        return None
    previous, current = rated[-2], rated[-1]
    if current["up_share"] >= previous["up_low"]:
        return None
    return (f"version {current['version']} is worse than {previous['version']}: thumbs-up {current['up_share']:.2f} "
            f"on {current['thumbs']} answers, below the previous version's 95% interval [{previous['up_low']:.2f}, "
            f"{previous['up_high']:.2f}]. Serve {previous['version']} again, or retrain from the feedback collected "
            f"since: rlhf iterate --db {db} --project {project} --from <the run that made {previous['version']}>")


def _fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def text_report(report: dict) -> str:
    lines = [f"{'version':<40} {'thumbs':>6} {'up':>5} {'95% interval':>14} {'regen':>6} {'words':>6}"]
    for r in report["versions"]:
        lines.append(f"{r['version'][-40:]:<40} {r['thumbs']:>6} {_fmt(r['up_share']):>5} "
                     f"{'[' + _fmt(r['up_low']) + ', ' + _fmt(r['up_high']) + ']':>14} "
                     f"{_fmt(r['regenerate_rate']):>6} {_fmt(r['mean_words'], 1):>6}")
    for r in report["versions"]:
        for scorer, f in r["flagged"].items():
            lines.append(f"flagged: {r['version'][-40:]} {f['share']:.2f} [{f['low']:.2f}, {f['high']:.2f}] of "
                         f"{f['scored']} answers scored by {scorer}")
    for row in report["leaderboard"]:
        lines.append(f"arena: {row['model'][-40:]} Bradley-Terry {row['bt']:.0f} [{row['bt_low']:.0f}, "
                     f"{row['bt_high']:.0f}] over {row['battles']} battles")
    lines.append(f"ALERT: {report['alert']}" if report["alert"] else "no alert: the newest version is not worse")
    return "\n".join(lines)


def html_report(report: dict) -> str:
    """The report as one page (every value escaped)."""
    e = html.escape
    cells = "".join(f"<tr><td>{e(r['version'])}</td><td>{r['thumbs']}</td><td>{_fmt(r['up_share'])}</td>"
                    f"<td>[{_fmt(r['up_low'])}, {_fmt(r['up_high'])}]</td><td>{_fmt(r['regenerate_rate'])}</td>"
                    f"<td>{_fmt(r['mean_words'], 1)}</td></tr>" for r in report["versions"])
    days = "".join(f"<tr><td>{e(r['version'])}</td><td>{e(day)}</td><td>{d['thumbs']}</td><td>{_fmt(d['up_share'])}</td></tr>"
                   for r in report["versions"] for day, d in r["days"].items())
    arena = "".join(f"<tr><td>{e(row['model'])}</td><td>{row['battles']}</td><td>{row['bt']:.0f}</td>"
                    f"<td>[{row['bt_low']:.0f}, {row['bt_high']:.0f}]</td></tr>" for row in report["leaderboard"])
    alert = (f'<p class="alert" role="alert">{e(report["alert"])}</p>' if report["alert"]
             else "<p>No alert: the newest version is not worse than the one before.</p>")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>rlhf monitor: "
            f"{e(report['project'])}</title><style>body{{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;"
            f"color:#222}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.3em .6em;"
            f"text-align:left}}.alert{{background:#fde8e8;border-left:4px solid #c00;padding:.6em}}</style></head><body>"
            f"<h1>What users think: {e(report['project'])}</h1>{alert}<h2>Per version</h2><table><tr><th>version</th>"
            f"<th>thumbs</th><th>thumbs-up</th><th>95% interval</th><th>regenerate rate</th><th>mean words</th></tr>"
            f"{cells}</table><h2>Arena (Bradley-Terry)</h2><table><tr><th>version</th><th>battles</th><th>rating</th>"
            f"<th>95% interval</th></tr>{arena}</table><h2>Per day</h2><table><tr><th>version</th><th>day</th>"
            f"<th>thumbs</th><th>thumbs-up</th></tr>{days}</table></body></html>")


def run(cfg) -> str:
    """`rlhf label monitor`: print the report (and write it as HTML with --out)."""
    from rlhf.feedback.store import open_store

    with open_store(cfg.db)() as s:
        report = monitor(s, cfg.project, cfg.min_feedback, cfg.db)
    print(text_report(report))
    if cfg.out:
        Path(cfg.out).write_text(html_report(report), encoding="utf-8")
        return cfg.out
    return "stdout"
