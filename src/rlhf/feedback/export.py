"""`rlhf label export`: a project's labels as the JSONL files the training stages read.

    comparisons  {"prompt", "chosen", "rejected"(, "margin")}  -> rlhf rm, rlhf dpo
    rankings     {"prompt", "responses", "ranking"}             -> rlhf rm (Plackett-Luce)
    binary       {"prompt", "completion", "label"}              -> rlhf dpo --loss kto

Binary rows come from thumbs answers, or, in a pairwise project, from each exported pair as a
desirable chosen and an undesirable rejected (the unpaired form KTO was introduced with).
The aggregation rules are in `rlhf.feedback.aggregate`; answers on gold items only measure the
annotators and are not exported (`include_gold` writes the gold answers themselves).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from rlhf.config.feedback import LabelExportConfig
from rlhf.data.files import write_jsonl
from rlhf.feedback import aggregate, repo
from rlhf.feedback.aggregate import Vote
from rlhf.feedback.store import open_store
from rlhf.feedback.tables import Label, Project, Prompt, Response, Task


def votes_of(labels: list[Label]) -> list[Vote]:
    return [Vote(l.task_id, l.annotator_id, l.outcome, l.winner_id, l.strength,
                 tuple(l.ranking) if l.ranking else None, l.thumbs) for l in labels]


def gold_votes(tasks: list[Task]) -> list[Vote]:
    """Gold answers as votes of a pseudo-annotator (id 0), for `include_gold`."""
    return [Vote(t.id, 0, t.gold["outcome"], t.gold.get("winner_id"), t.gold.get("strength"),
                 tuple(t.gold["ranking"]) if t.gold.get("ranking") else None, t.gold.get("thumbs"))
            for t in tasks if t.gold is not None]


def export_rows(s: Session, project: Project, cfg: LabelExportConfig) -> list[dict]:
    """The rows of `cfg.format` for `project` under `cfg`'s aggregation rule."""
    tasks = {t.id: t for t in s.scalars(select(Task).where(Task.project_id == project.id))}
    gold = {t.id: t.gold for t in tasks.values() if t.gold is not None}
    votes = aggregate.trusted(votes_of(repo.live_labels(s, project)), gold, cfg.min_gold_accuracy)
    votes = [v for v in votes if v.task_id not in gold]
    if cfg.include_gold:
        votes += gold_votes(list(tasks.values()))
    response_ids = {t.id: list(t.response_ids) for t in tasks.values()}
    prompt_ids = {t.prompt_id for t in tasks.values()}
    prompts = {p.id: p.content for p in s.scalars(select(Prompt).where(Prompt.id.in_(prompt_ids)))}
    texts = dict(s.execute(select(Response.id, Response.text).join(Prompt).where(Prompt.project_id == project.id)).all())

    def prompt_of(task_id):
        return prompts[tasks[task_id].prompt_id]

    majority = dict(min_agreement=cfg.min_agreement, min_votes=cfg.min_votes)
    if cfg.format == "rankings":
        return [{"prompt": prompt_of(t), "responses": [texts[r] for r in response_ids[t]],
                 "ranking": [response_ids[t].index(r) for r in order]}
                for t, order in aggregate.rankings(votes, response_ids, cfg.rule, **majority)]
    if cfg.format == "binary" and project.mode == "thumbs":
        return [{"prompt": prompt_of(t), "completion": texts[r], "label": up}
                for t, r, up in aggregate.thumbs(votes, response_ids, cfg.rule, **majority)]
    pairs = aggregate.pairs(votes, response_ids, cfg.rule, cfg.drop_ties, **majority)
    if cfg.format == "binary":
        return [{"prompt": prompt_of(p.task_id), "completion": texts[r], "label": up}
                for p in pairs for r, up in ((p.chosen, True), (p.rejected, False))]
    rows = []
    for p in pairs:
        row = {"prompt": prompt_of(p.task_id), "chosen": texts[p.chosen], "rejected": texts[p.rejected]}
        if cfg.strength_margin > 0:
            row["margin"] = cfg.strength_margin * (p.strength - 1)
        rows.append(row)
    return rows


def run(cfg: LabelExportConfig) -> str:
    sessions = open_store(cfg.db)
    with sessions() as s:
        project = repo.project_by_name(s, cfg.project)
        if project is None:
            raise ValueError(f"no project named {cfg.project!r} in {cfg.db}")
        rows = export_rows(s, project, cfg)
    if not rows:
        raise ValueError(f"project {cfg.project!r} has no {cfg.format} to export under rule={cfg.rule} "
                         f"(an empty file would stop training anyway)")
    return f"{write_jsonl(cfg.out, rows)} ({len(rows)} rows)"
