"""`rlhf judge` (AI preferences) and `rlhf judge revise` (Constitutional AI), on `rlhf.labelers.judge`.

`rlhf judge --data CANDIDATES --model DIR | --api-base URL --api-model NAME`:
  the k responses of each {"prompt","responses"} row form k // 2 disjoint pairs (0, 1), (2, 3), ...
  as in `rlhf generate --label`; a comparisons file is re-judged pair by pair. Each pair is asked
  in both orders; a verdict that flips with the order (or [[C]]) is a tie, left out and counted.
  Writes comparisons {"prompt","chosen","rejected"} to --out and the summary (pairs, ties,
  position bias, cache hits, requests) to OUT.summary.json. No comparison at all (every answer
  malformed, every verdict flipping) is an error that says why and what to change; --out is
  then not written.

`rlhf judge revise --data RESPONSES [--constitution FILE] [--pairs FILE]`:
  for each prompt and response, a principle drawn (seeded) from the constitution; the judge
  critiques the response against it, then revises it (Bai et al. 2022, the SL stage of CAI).
  Writes demonstrations {"prompt","completion": revision} to --out and, with --pairs,
  comparisons {"prompt","chosen": revision, "rejected": original} (a revision equal to the
  original says nothing and is skipped, counted); no revision at all is an error, as above.
"""

from __future__ import annotations

import json
import random
import time
from importlib import resources
from pathlib import Path

import yaml

from .. import runtime
from ..config import JudgeConfig, JudgeReviseConfig
from ..config.judge import DEFAULT_CONSTITUTION
from ..data import formats, rows
from ..data.files import write_jsonl
from ..data.records import PromptText, prompt_as_json
from ..runtime.files import atomic_write_text
from .judge import JudgeError, build_judge, no_verdict, parse_critique, parse_revision, render_prompt, summary


def read_responses(path: str, skip_bad_rows: bool) -> list[tuple[PromptText, tuple[str, ...]]]:
    """(prompt, responses) per row of a candidates, comparisons or demonstrations file (file:line errors)."""

    def parse(row: dict):
        if "responses" in row:
            return rows._prompt(row.get("prompt")), rows.responses(row)
        if "completion" in row:
            demo = rows.demonstration(row)
            return demo.prompt, (demo.completion,)
        pair = rows.comparison(row)
        return pair.prompt, (pair.chosen, pair.rejected)

    return list(formats._read(path, parse, skip_bad_rows))


def _judge(cfg, out: Path):
    cache = cfg.cache or str(out.with_name(out.name + ".cache.jsonl"))
    device = runtime.pick_device(cfg.device) if cfg.model else "cpu"
    return build_judge(cfg.model, cfg.api_base, cfg.api_model, cfg.api_key_env, cache, cfg.retries,
                       cfg.on_malformed, cfg.max_new_tokens, device, cfg.concurrency, cfg.request_timeout)


def judge_pairs(cfg: JudgeConfig) -> Path:
    start, out = time.perf_counter(), Path(cfg.out)
    data = read_responses(cfg.data, cfg.skip_bad_rows)
    pairs = [(p, rs[j], rs[j + 1]) for p, rs in data for j in range(0, len(rs) - 1, 2)]
    if not pairs:
        raise ValueError(f"{cfg.data}: no row has two responses to compare")
    judge = _judge(cfg, out)
    judge.pairwise_template = cfg.template
    picks = judge.prefer([p for p, _, _ in pairs], [a for _, a, _ in pairs], [b for _, _, b in pairs])
    records = [{"prompt": prompt_as_json(p), "chosen": a if pick == 0 else b, "rejected": b if pick == 0 else a}
               for (p, a, b), pick in zip(pairs, picks) if pick is not None]
    stats = {"pairs": len(pairs), "comparisons": len(records), "ties": len(pairs) - len(records),
             "template": cfg.template, **summary(judge), "seconds": round(time.perf_counter() - start, 3)}
    summary_path = out.with_name(out.name + ".summary.json")
    atomic_write_text(summary_path, json.dumps(stats, indent=2) + "\n")
    if not records:  # an empty file would train nothing, and say nothing about why
        raise JudgeError(f"{no_verdict(judge, len(pairs))} Nothing written to {out}; the counts are in {summary_path}.")
    write_jsonl(out, records)
    bias = "n/a" if stats["position_bias"] is None else f"{stats['position_bias']:.2f}"
    print(f"rlhf judge: {stats['pairs']} pairs -> {stats['comparisons']} comparisons, {stats['ties']} ties; "
          f"position bias (first-position wins) {bias}; {stats['cache_hits']} cache hits, {stats['requests']} requests")
    return out


def load_constitution(path: str) -> list[dict]:
    """Principles [{"name", "critique", "revision"}] from a YAML file (or the shipped default)."""
    if path == DEFAULT_CONSTITUTION:
        text = (resources.files("rlhf.resources") / "constitution" / "default.yaml").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"constitution {path}: not valid YAML: {err}") from None
    principles = loaded.get("principles") if isinstance(loaded, dict) else None
    if not isinstance(principles, list) or not principles:
        raise ValueError(f"constitution {path}: expected `principles:` with a list of {{name, critique, revision}}")
    for n, p in enumerate(principles):
        if not isinstance(p, dict) or not all(isinstance(p.get(k), str) and p[k].strip() for k in ("critique", "revision")):
            raise ValueError(f"constitution {path}: principle {n + 1} needs non-empty `critique` and `revision` texts")
    return principles


def revise(cfg: JudgeReviseConfig) -> Path:
    start, out = time.perf_counter(), Path(cfg.out)
    principles = load_constitution(cfg.constitution)
    items = [(p, r) for p, rs in read_responses(cfg.data, cfg.skip_bad_rows) for r in rs]
    rng = random.Random(cfg.seed)
    drawn = [rng.choice(principles) for _ in items]
    judge = _judge(cfg, out)
    names = [f"response {n} (prompt {render_prompt(p)[:60]!r})" for n, (p, _) in enumerate(items)]
    critiques = judge.ask("critique-v1", [{"prompt": render_prompt(p), "response": r, "critique_request": c["critique"]}
                                          for (p, r), c in zip(items, drawn)], parse_critique, names, "a critique")
    asked = [i for i, c in enumerate(critiques) if c is not None]  # on_malformed=tie: no critique, no revision
    revisions = judge.ask("revision-v1", [{"prompt": render_prompt(items[i][0]), "response": items[i][1],
                                           "critique": critiques[i], "revision_request": drawn[i]["revision"]}
                                          for i in asked], parse_revision, [names[i] for i in asked],
                          '"Revision:" followed by the revised response')
    revised = [(items[i][0], items[i][1], rev) for i, rev in zip(asked, revisions) if rev is not None]
    comparisons = [{"prompt": prompt_as_json(p), "chosen": rev, "rejected": orig} for p, orig, rev in revised if rev != orig]
    stats = {"responses": len(items), "revisions": len(revised), "unchanged": len(revised) - len(comparisons),
             "critiques": len(asked),
             "principles": {c.get("name", str(n)): sum(d is c for d in drawn) for n, c in enumerate(principles)},
             **summary(judge), "seconds": round(time.perf_counter() - start, 3)}
    summary_path = out.with_name(out.name + ".summary.json")
    atomic_write_text(summary_path, json.dumps(stats, indent=2) + "\n")
    if not revised:
        raise JudgeError(f"no usable revision: {len(items)} responses -> 0 revisions ({len(items) - len(asked)} "
                         f"critiques and {len(asked)} revisions malformed, expected \"Revision:\" and the revised "
                         f"response). {judge.malformed_hint()} Nothing written to {out}; the counts are in "
                         f"{summary_path}.")
    write_jsonl(out, [{"prompt": prompt_as_json(p), "completion": rev} for p, _, rev in revised])
    if cfg.pairs:
        write_jsonl(cfg.pairs, comparisons)
    print(f"rlhf judge revise: {len(items)} responses -> {len(revised)} revisions"
          + (f", {len(comparisons)} comparisons -> {cfg.pairs}" if cfg.pairs else "")
          + f"; {stats['cache_hits']} cache hits, {stats['requests']} requests")
    return out


def run(cfg: JudgeConfig | JudgeReviseConfig) -> Path:
    return revise(cfg) if isinstance(cfg, JudgeReviseConfig) else judge_pairs(cfg)
