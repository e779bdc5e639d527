"""What every run report shares: the one rule for how a number is written, the run files it
reads, and the page around a report (`page`: its HTML head and CSS).

`format_number` is the text any value from summary.json has on a page, which the reports' tests
rely on; `read_rows` reads a run's metrics.jsonl (absent: []); `run_kind` tells which stage a run
directory holds. Used by `rlhf.eval.run_report` (any stage's run) and by the demo's own report
(`rlhf.demo.report`).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from ..data.files import read_json

MISSING = "–"


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


def read_rows(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return [json.loads(line) for line in lines if line.strip()]


def run_kind(path: Path, rows: list[dict]) -> str:
    """sft, rm, policy (ppo, rloo, grpo), dpo or other: from the run's summary.json, else its metric keys."""
    stage = (read_json(path / "summary.json", missing_ok=True) or {}).get("stage")
    known = {"sft": "sft", "rm": "rm", "reward": "rm", "ppo": "policy", "dpo": "dpo"}
    if stage in known:
        return known[stage]
    keys = set().union(*rows) if rows else set()
    return ("policy" if "gold" in keys else "dpo" if "reward_chosen" in keys
            else "rm" if {"accuracy", "margin"} <= keys else "sft" if path.name.startswith("sft") else "other")


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; max-width: 1120px;
       margin: 0 auto; padding: 1.5rem 2rem 4rem; line-height: 1.45; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: .2rem; margin-top: 2.4rem; }
.lede { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .95rem; }
th, td { padding: .35rem .7rem; border-bottom: 1px solid #e2e2e2; text-align: left; vertical-align: top; }
th { background: #f4f4f6; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.headline td { font-weight: 600; } .best { background: #e8f5e9; }
.meta span[data-key] { font-weight: 600; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9rem; max-width: 900px; }
.sample { margin: 1rem 0 1.6rem; } .sample .prompt { background: #f4f4f6; padding: .4rem .7rem; }
.sample table { width: 100%; margin-top: .3rem; } .sample td.text { white-space: pre-wrap; }
details, p.step { margin: .4rem 0 .4rem 1.1rem; } summary { cursor: pointer; margin-left: -1.1rem; }
pre { background: #f7f7f9; padding: .6rem .9rem; overflow-x: auto; font-size: .85rem; }
.note { color: #8a6d3b; }
.noise { background: #fff4e5; border-left: 4px solid #e69500; padding: .5rem .8rem; color: #5a4200; }
td.meaning { color: #555; font-size: .85rem; max-width: 560px; }
"""


def page(title: str, body: str) -> str:
    """A whole self-contained page: `title` (escaped) in <title>, the CSS inline, `body` (HTML) inside <body>."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{_CSS}</style>
</head>
<body>
{body}
</body>
</html>
"""
