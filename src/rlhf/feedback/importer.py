"""`rlhf label import`: tasks (and labels) from files into a project.

Rows are read with the toolkit's readers (`rlhf.data.formats`: every container they accept,
errors that name the file and line), one kind decided per row:

    {"prompt", "responses": [...]} (+ optional "models": [...])   candidates to label (`rlhf generate`)
    {"prompt", "responses", "ranking"}                             a ranking       -> ranking projects
    {"prompt", "completion", "label"}                              thumbs          -> thumbs projects
    any comparison the readers accept                              a pairwise win  -> pairwise projects

Candidates become tasks by the project's mode: pairwise takes disjoint pairs (1-2, 3-4, ...,
as `rlhf generate --label` does), ranking one task of all k, thumbs one task per response.
A labelled row's answer becomes the task's gold answer, or a label of one named annotator.
Pairs are stored in a shuffled order (seeded by the row number) so the stored order says
nothing about which response won; the annotation page shuffles again per annotator.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from rlhf.config.feedback import LabelImportConfig
from rlhf.data import formats, rows
from rlhf.data.records import BinaryFeedback, Comparison, PromptText, Ranking
from rlhf.feedback import repo
from rlhf.feedback.store import open_store
from rlhf.feedback.tables import Label, Project


@dataclass(frozen=True)
class Candidates:
    """Responses to label, as `rlhf generate` writes them without --label."""

    prompt: PromptText
    responses: tuple[str, ...]
    models: tuple[str, ...] | None  # who wrote each response, when the row says


@dataclass
class ImportResult:
    tasks: int = 0
    labels: int = 0
    skipped: int = 0


KIND_OF_MODE = {"pairwise": Comparison, "ranking": Ranking, "thumbs": BinaryFeedback}


def prompt_json(prompt: PromptText):
    """A prompt as stored and exported: the text, or the conversation as message dicts."""
    if isinstance(prompt, tuple):
        return [{"role": m.role, "content": m.content} for m in prompt]
    return prompt


def parse_row(row: dict):
    """One decoded row -> Candidates, Ranking, BinaryFeedback or Comparison (or rows.RowError)."""
    if "ranking" in row:
        return rows.ranking(row)
    if "responses" in row:
        texts = rows.responses(row)
        models = row.get("models")
        if models is not None and (not isinstance(models, list) or len(models) != len(texts)
                                   or not all(isinstance(m, str) for m in models)):
            raise rows.RowError(f'"models" must be a list of {len(texts)} strings, one per response')
        return Candidates(rows._prompt(rows._get(row, "prompt")), texts, tuple(models) if models else None)
    if "label" in row:
        return rows.binary_feedback(row)
    return rows.comparison(row)


def read_rows(path: str | Path, skip_bad_rows: bool = False) -> formats.Records:
    return formats._read(path, parse_row, skip_bad_rows)


def import_records(s: Session, project: Project, records, source: str, labels_as: str = "gold",
                   annotator_name: str = "imported") -> ImportResult:
    """Add the records' tasks (and answers) to `project`; the caller commits."""
    result = ImportResult(skipped=getattr(records, "skipped", 0))
    annotator = repo.annotator_by_name(s, project, annotator_name, create=True) if labels_as == "annotator" else None
    for number, record in enumerate(records):
        if isinstance(record, Candidates):
            models = record.models or (source,) * len(record.responses)
            ids = repo.add_prompt(s, project, prompt_json(record.prompt), list(zip(record.responses, models)))
            for group in _groups(ids, project.mode):
                repo.add_task(s, project, group)
                result.tasks += 1
            continue
        if not isinstance(record, KIND_OF_MODE[project.mode]):
            raise ValueError(f"row {number + 1}: a {type(record).__name__} cannot go into a {project.mode} project "
                             f"(comparisons go to pairwise, rankings to ranking, binary feedback to thumbs)")
        ids, answer = _labelled(s, project, record, source, random.Random(number))
        task = repo.add_task(s, project, ids, gold=answer if labels_as == "gold" else None)
        result.tasks += 1
        if annotator is not None:
            s.add(Label(task_id=task.id, annotator_id=annotator.id, request_id=f"import-{uuid.uuid4().hex}",
                             reason="", **answer))
            result.labels += 1
    return result


def _groups(ids: list[int], mode: str) -> list[list[int]]:
    if mode == "pairwise":
        return [ids[j:j + 2] for j in range(0, len(ids) - 1, 2)]
    if mode == "ranking":
        return [ids] if len(ids) >= 2 else []
    return [[i] for i in ids]


def _labelled(s: Session, project: Project, record, source: str, rng: random.Random) -> tuple[list[int], dict]:
    """Store a labelled record's prompt and responses: (task response ids, answer as label fields)."""
    if isinstance(record, Comparison):
        chosen, rejected = repo.add_prompt(s, project, prompt_json(record.prompt),
                                           [(record.chosen, source), (record.rejected, source)])
        pair = [chosen, rejected]
        rng.shuffle(pair)
        return pair, {"outcome": "win", "winner_id": chosen}
    if isinstance(record, Ranking):
        ids = repo.add_prompt(s, project, prompt_json(record.prompt), [(r, source) for r in record.responses])
        return ids, {"outcome": "ranking", "ranking": [ids[i] for i in record.ranking]}
    (rid,) = repo.add_prompt(s, project, prompt_json(record.prompt), [(record.completion, source)])
    return [rid], {"outcome": "thumbs", "thumbs": record.label}


def import_pandalm(s: Session, project: Project, path: str | Path) -> ImportResult:
    """PandaLM's testset-v1.json: each pair with its three human labels (1: response1 better,
    2: response2 better, 0: tie) as annotators annotator1..3; responses tagged with the models
    named in cmp_key ("modelA_modelB")."""
    items = json.loads(Path(path).read_text(encoding="utf-8"))
    annotators = [repo.annotator_by_name(s, project, f"annotator{k}", create=True) for k in (1, 2, 3)]
    result = ImportResult()
    for item in items:
        model_a, model_b = item["cmp_key"].split("_", 1)
        prompt = item["instruction"] + (f"\n\n{item['input']}" if item.get("input") else "")
        ids = repo.add_prompt(s, project, prompt, [(item["response1"], model_a), (item["response2"], model_b)])
        task = repo.add_task(s, project, ids)
        result.tasks += 1
        for k, annotator in enumerate(annotators, 1):
            vote = item[f"annotator{k}"]
            answer = {"outcome": "tie"} if vote == 0 else {"outcome": "win", "winner_id": ids[vote - 1]}
            s.add(Label(task_id=task.id, annotator_id=annotator.id, request_id=f"pandalm-{item['idx']}",
                             reason="", **answer))
            result.labels += 1
    return result


def import_file(s: Session, project: Project, path: str | Path, *, fmt: str = "auto", source: str = "",
                labels_as: str = "gold", annotator: str = "imported", skip_bad_rows: bool = False) -> ImportResult:
    if fmt == "pandalm":
        return import_pandalm(s, project, path)
    records = read_rows(path, skip_bad_rows)
    try:
        return import_records(s, project, records, source or Path(path).name, labels_as, annotator)
    except ValueError as err:  # a record of the wrong kind for the project's mode
        raise ValueError(f"{path}: {err}") from None


def run(cfg: LabelImportConfig) -> str:
    if not cfg.file:
        raise ValueError("name the file to import: rlhf label import --project NAME FILE")
    if not Path(cfg.file).exists():
        raise FileNotFoundError(f"data file not found: {cfg.file}")
    sessions = open_store(cfg.db)
    with sessions() as s:
        project = repo.project_by_name(s, cfg.project)
        if project is None:
            project = repo.create_project(s, cfg.project, cfg.mode, cfg.overlap, cfg.gold_share)
        result = import_file(s, project, cfg.file, fmt=cfg.format, source=cfg.source, labels_as=cfg.labels_as,
                             annotator=cfg.annotator, skip_bad_rows=cfg.skip_bad_rows)
        s.commit()
    skipped = f", {result.skipped} bad rows skipped" if result.skipped else ""
    return f"project {cfg.project!r}: {result.tasks} tasks, {result.labels} labels imported{skipped}"
