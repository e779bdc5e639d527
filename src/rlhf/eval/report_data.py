"""What the demo's report reads, and the one rule for how it writes a number.

`load_runs` gathers the run directories a demo's summary.json names (metrics, config, eval);
`format_number` is the text any value from summary.json has on a page, which the report's tests
rely on; `lookup` reads a dotted path ("steps.0.wall_s") from summary.json.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

MISSING = "–"
METHODS = ("sft", "ppo", "rloo", "grpo", "dpo", "online_dpo")


def format_number(value) -> str:
    """The text a value from summary.json has on the page; the rule the page's tests rely on.

    None -> "–"; bool -> "yes" / "no"; int -> its digits ("3000"); str -> itself; float -> NaN
    "nan", infinities "inf" / "-inf", otherwise fixed point with 3 decimals when |value| < 10, 2
    when < 100, 1 when < 1000 and none from 1000 up (0.961, 11.41, 950.1, 1234), a negative zero
    written without its sign. Other types -> str(value).
    """
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        magnitude = abs(value)
        decimals = 3 if magnitude < 10 else 2 if magnitude < 100 else 1 if magnitude < 1000 else 0
        text = f"{value:.{decimals}f}"
        return text[1:] if text.startswith("-") and not text.strip("-0.") else text
    return str(value)


def lookup(summary: dict, dotted: str):
    """The value at a dotted path ("ppo.ci_low", "steps.0.wall_s"); KeyError when it is not there."""
    value = summary
    for part in dotted.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(dotted)
    return value


@dataclass
class Run:
    """One step's run directory, as far as the report needs it."""
    name: str                 # its `dir` in summary.json, relative to the demo directory
    path: Path
    rows: list[dict]          # metrics.jsonl
    config_text: str | None   # config.yaml as written
    eval: dict | None         # eval.json (policies)
    kind: str                 # sft, rm, policy, dpo or other


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_rows(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return [json.loads(line) for line in lines if line.strip()]


def run_kind(path: Path, rows: list[dict]) -> str:
    """sft, rm, policy (ppo, rloo, grpo), dpo or other: from the run's summary.json, else its metric keys."""
    stage = (read_json(path / "summary.json") or {}).get("stage")
    known = {"sft": "sft", "rm": "rm", "reward": "rm", "ppo": "policy", "dpo": "dpo"}
    if stage in known:
        return known[stage]
    keys = set().union(*rows) if rows else set()
    return ("policy" if "gold" in keys else "dpo" if "reward_chosen" in keys
            else "rm" if {"accuracy", "margin"} <= keys else "sft" if path.name.startswith("sft") else "other")


def load_runs(demo_dir: Path, summary: dict) -> dict[str, Run]:
    """Every run directory summary.json names, keyed by its `dir`, in the order of `steps`.

    A named directory that does not exist is an error; missing files inside one are not.
    """
    named = [(step["dir"], f"steps.{i}.dir") for i, step in enumerate(summary.get("steps", [])) if step.get("dir")]
    named += [(summary[key]["dir"], f"{key}.dir") for key in ("rm", *METHODS)
              if isinstance(summary.get(key), dict) and summary[key].get("dir")]
    named += [(p["dir"], f"frontier.{i}.dir") for i, p in enumerate(summary.get("frontier", [])) if p.get("dir")]
    runs: dict[str, Run] = {}
    for rel, where in named:
        path = demo_dir / rel
        if not path.is_dir():
            raise FileNotFoundError(f"summary.json names run directory {rel!r} (at {where}) but {path} does not exist")
        if rel not in runs:
            rows = read_rows(path / "metrics.jsonl")
            config = path / "config.yaml"
            runs[rel] = Run(rel, path, rows, config.read_text(encoding="utf-8") if config.is_file() else None,
                            read_json(path / "eval.json"), run_kind(path, rows))
    return runs
