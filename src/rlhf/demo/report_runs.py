"""What the demo's report reads: the run directories a demo's summary.json names.

`read_summary` reads its summary.json; `load_runs` gathers the runs (metrics, config, eval);
`lookup` reads a dotted path ("steps.0.wall_s") from summary.json; METHODS are the policies the
report compares, in the order it shows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.files import read_json
from ..eval.report_data import read_rows, run_kind

METHODS = ("sft", "ppo", "rloo", "grpo", "dpo", "online_dpo")


def read_summary(demo_dir: Path, command: str) -> dict:
    """The demo directory's summary.json; FileNotFoundError naming the `command` that writes it."""
    summary = read_json(demo_dir / "summary.json", missing_ok=True)
    if summary is None:
        raise FileNotFoundError(f"no summary.json in {demo_dir}: run `{command}` first")
    return summary


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
                            read_json(path / "eval.json", missing_ok=True), run_kind(path, rows))
    return runs
