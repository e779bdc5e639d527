"""`rlhf report RUN_DIR`: the HTML report of any run directory, with the demo report's parts.

A demo directory (what `rlhf demo` writes: a summary.json listing its steps) gets the demo's own
report, `rlhf.demo.report` (`rlhf report` picks it: `is_demo_run`). Any single stage's run
directory (`rlhf sft`, `rm`, `dpo` (offline or --online), `ppo`) gets RUN_DIR/report.html with
its figures in RUN_DIR/figures/:

- the summary: the final figures of summary.json, and why the run stopped early where it did;
- the over-optimisation guard (online runs): its warnings (step, signal, value, threshold), the
  best guard step, a plot of each signal with its threshold and the warning steps marked, the
  per-step figures it reads (length, EOS share, repetition, distinct-2, ensemble disagreement),
  and proxy against gold reward where a gold scorer was logged;
- training curves from metrics.jsonl, as the demo report draws them for the stage;
- samples (samples.jsonl: the policy's responses along training; eval_samples.jsonl), the
  resolved config.yaml and the whole summary.json.

Like the demo report: no JavaScript, nothing from the network, every text through html.escape.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from . import plots
from .overopt import SIGNALS
from ..data.files import read_json
from .report_data import format_number, page, read_rows, run_kind

GUARD_SIGNAL_PANELS = [(f"guard/{name}", name.replace("_", " ")) for name in SIGNALS] + [
    ("guard/score", "guard score (higher: healthier)")]
GUARD_MEASURE_PANELS = [("guard/length", "mean response length (tokens)"), ("guard/eos_rate", "share ending with EOS"),
                        ("guard/repetition", "repeated 3-grams within a response"),
                        ("guard/distinct_2", "distinct-2 across responses"),
                        ("guard/disagreement", "ensemble disagreement (std)"),
                        ("guard/reward_per_token", "reward per token"),
                        ("guard/reward_length_slope", "reward per extra token (slope)"),
                        ("guard/proxy_gold_corr", "proxy-gold correlation (window)")]
MAX_SAMPLES = 8


def is_demo_dir(summary: dict) -> bool:
    """A demo directory's summary lists its steps and belongs to no single stage."""
    return "stage" not in summary and isinstance(summary.get("steps"), list)


def is_demo_run(run_dir: str | Path) -> bool:
    """True for a demo directory (its report is the demo's own, `rlhf.demo.report`)."""
    return is_demo_dir(read_json(Path(run_dir) / "summary.json", missing_ok=True) or {})


def write_run_report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report.html (and RUN_DIR/figures/) for one stage's run; returns the page's path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a directory: pass a run directory (the --out of a stage or demo)")
    summary = read_json(run_dir / "summary.json", missing_ok=True) or {}
    if is_demo_dir(summary):
        raise ValueError(f"{run_dir} is a demo directory: its report is the demo's (`rlhf report {run_dir}`)")
    rows = read_rows(run_dir / "metrics.jsonl")
    if not rows and not summary:
        raise FileNotFoundError(f"{run_dir} has neither metrics.jsonl nor summary.json: is it a run directory?")
    figures = draw_run_figures(run_dir, rows, summary)
    config = run_dir / "config.yaml"
    page = render_run(run_dir, rows, summary, figures, config.read_text(encoding="utf-8") if config.is_file() else None,
                      read_rows(run_dir / "samples.jsonl"), read_rows(run_dir / "eval_samples.jsonl"))
    out = run_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    return out


def guard_x_key(summary: dict) -> str:
    """The x axis of the guard's figures: the step, or the round for online DPO (its guard counts rounds)."""
    return "guard_round" if summary.get("online") else "step"


def draw_run_figures(run_dir: Path, rows: list[dict], summary: dict) -> dict[str, str]:
    """Every figure the run's files allow, under run_dir/figures; {name: path relative to run_dir}."""
    figures_dir, figures = run_dir / "figures", {}
    kind, name = run_kind(run_dir, rows), run_dir.name

    def keep(key: str, path: Path | None) -> None:
        if path is not None:  # None: the figure had nothing to show (no panel with data)
            figures[key] = path.relative_to(run_dir).as_posix()

    curve_kinds = [k for k in plots.STAGE_CURVES if k.split("-")[0] == kind] or ["other"]
    for curve in curve_kinds:
        title, _, panels = plots.STAGE_CURVES[curve]
        keep(f"curves-{curve}", plots.training_curves({name: rows}, panels, title, figures_dir / f"curves-{curve}.png"))
    if any("gold" in r and "reward" in r for r in rows):
        keep("proxy_vs_gold", plots.proxy_vs_gold({name: rows}, name, figures_dir / "proxy-vs-gold.png"))
    guard = summary.get("guard") if isinstance(summary.get("guard"), dict) else {}
    guard_rows = [r for r in rows if any(k.startswith("guard/") for k in r)]
    if guard_rows:
        x_key = guard_x_key(summary)
        if x_key == "guard_round":  # online DPO: its round lines, numbered from 1 as the guard counts them
            guard_rows = [{**r, "guard_round": r["round"] + 1} for r in guard_rows if "round" in r]
        marks = {"best guard step": guard["best_step"]} if guard.get("best_step") is not None else {}
        warnings = guard.get("warnings", [])
        keep("guard_signals", plots.guard_signals(
            guard_rows, GUARD_SIGNAL_PANELS, figures_dir / "guard-signals.png",
            "Over-optimisation guard: signals (dashed: threshold; red: warnings)", guard.get("thresholds"),
            warnings, x_key, marks))
        keep("guard_measures", plots.guard_signals(
            guard_rows, GUARD_MEASURE_PANELS, figures_dir / "guard-measures.png",
            "What the guard reads of each step's responses", None, warnings, x_key, marks))
    return figures


# ---------------------------------------------------------------- HTML

def _esc(value) -> str:
    return html.escape(format_number(value) if not isinstance(value, str) else value)


def _img(figures: dict[str, str], key: str, alt: str, caption: str) -> str:
    if key not in figures:
        return ""
    return (f'<figure><img src="{html.escape(figures[key])}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _kl_note(summary: dict, rows: list[dict]) -> str:
    """What summary.json's `kl` is: the KL of the last batch by the reward's estimator, which with
    k1 can be negative on a batch (KL itself never is), and the k3 figure of the same step."""
    estimator = summary.get("kl_estimator")
    if "kl" not in summary or not estimator:
        return ""
    note = f"KL to the reference on the last batch, {estimator} estimator"
    if estimator == "k1":
        note += (" (log π − log π_ref per token: unbiased, but a batch's mean can come out below 0; "
                 "KL itself never is)")
    last = next((r["kl_k3"] for r in reversed(rows) if isinstance(r.get("kl_k3"), (int, float))), None)
    if last is not None and estimator != "k3":
        note += f"; k3 on the same step, never negative: {format_number(last)}"
    return note


def _summary_section(summary: dict, metrics: list[dict] | None = None) -> str:
    scalars = [(k, v) for k, v in summary.items() if not isinstance(v, (dict, list))]
    if not scalars:
        return '<h2 id="summary">Summary</h2>\n<p class="note">No summary.json: the run has not finished.</p>'
    notes = {"kl": _kl_note(summary, metrics or [])}
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td class=num>{_esc(v)}</td>"
                   f"<td class=meaning>{html.escape(notes.get(k, ''))}</td></tr>" for k, v in scalars)
    parts = ['<h2 id="summary">Summary</h2>']
    stop = summary.get("stopped_early")
    if isinstance(stop, dict):
        parts.append(f'<p class="note"><strong>Stopped early at step {_esc(stop.get("step"))}</strong> by the '
                     f"over-optimisation guard: {_esc(stop.get('reason', ''))}</p>")
    parts.append(f"<table><tr><th>figure</th><th class=num>value</th><th></th></tr>{rows}</table>")
    return "\n".join(parts)


def _guard_section(summary: dict, figures: dict[str, str]) -> str:
    guard = summary.get("guard") if isinstance(summary.get("guard"), dict) else None
    if guard is None and "guard_signals" not in figures:
        return ""
    parts = ['<h2 id="guard">Over-optimisation guard</h2>',
             '<p class="lede">Signals that the policy is gaming its reward, read from its own samples without a '
             "gold reward: each compares the latest window of steps with the first (the baseline) and warns once "
             "it stays past its threshold. A warning is a reason to look at the samples, not a proof.</p>"]
    if guard and not guard.get("enabled", True):
        parts.append('<p class="note">The guard was off for this run (guard_window 0).</p>')
    if guard and guard.get("enabled", True):
        unit = "round" if summary.get("online") else "step"
        parts.append(f"<p>Window {_esc(guard.get('window'))} {unit}s, patience {_esc(guard.get('patience'))}; "
                     f"best guard score {_esc(guard.get('best_score'))} at {unit} {_esc(guard.get('best_step'))} "
                     f"(its policy is in <code>best_guard/</code> unless guard_save_best was off); first warning at "
                     f"{unit} {_esc(guard.get('first_warning_step'))}.</p>")
        warnings = guard.get("warnings") or []
        if warnings:
            rows = "".join(f"<tr><td class=num>{_esc(w.get('step'))}</td><td>{_esc(str(w.get('signal')))}</td>"
                           f"<td class=num>{_esc(w.get('value'))}</td><td class=num>{_esc(w.get('threshold'))}</td>"
                           f"<td>{_esc(str(w.get('message', '')))}</td></tr>" for w in warnings)
            parts.append(f'<table class="warnings"><tr><th class=num>{unit}</th><th>signal</th><th class=num>value'
                         f"</th><th class=num>threshold</th><th>message</th></tr>{rows}</table>")
        else:
            parts.append("<p>No warning.</p>")
        if "guard_signals" not in figures:
            below = " (the per-step measures are below)" if "guard_measures" in figures else ""
            parts.append(f'<p class="note">No signal yet: the signals compare the latest {unit}s with a baseline of '
                         f"the first {_esc(guard.get('window'))}, and this run ended before that baseline was "
                         f"complete, so there is no signal figure{below}.</p>")
        thresholds = guard.get("thresholds") or {}
        if thresholds:
            rows = "".join(f"<tr><td>{_esc(name)}</td><td class=num>{_esc(value)}</td><td>"
                           f"{_esc(SIGNALS.get(name, (0, ''))[1])}</td></tr>" for name, value in thresholds.items())
            parts.append("<details><summary>Signals and thresholds</summary><table><tr><th>signal</th>"
                         f"<th class=num>threshold</th><th>warns when</th></tr>{rows}</table></details>")
    parts.append(_img(figures, "guard_signals", "guard signals along training",
                      "Each signal against the step, its threshold dashed; red lines: the steps where that signal "
                      "warned (grey: another signal's warnings); green dotted: the best guard step."))
    parts.append(_img(figures, "guard_measures", "what the guard reads of each step",
                      "The per-step figures behind the signals."))
    parts.append(_img(figures, "proxy_vs_gold", "proxy and gold reward",
                      "Proxy (the reward optimised) and gold reward along training: over-optimisation is the proxy "
                      "rising while the gold falls."))
    return "\n".join(p for p in parts if p)


def _curves_section(figures: dict[str, str]) -> str:
    parts = [_img(figures, key, key, plots.STAGE_CURVES[key.removeprefix("curves-")][1])
             for key in figures if key.startswith("curves-")]
    return '<h2 id="curves">Training curves</h2>\n' + "\n".join(parts)


def _cell(value) -> str:
    """A sample's field as text: numbers by the page's one rule (`format_number`: 0.673, not
    0.6726133227348328), strings as they are, anything else as JSON."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return format_number(value)
    return json.dumps(value, ensure_ascii=False)


def _sample_table(rows: list[dict]) -> str:
    cells = []
    for row in rows:
        body = "".join(f"<tr><th>{html.escape(str(k))}</th><td class=text>{html.escape(_cell(v))}</td></tr>"
                       for k, v in row.items())
        cells.append(f'<div class="sample"><table>{body}</table></div>')
    return "\n".join(cells)


def _samples_section(samples: list[dict], eval_samples: list[dict]) -> str:
    parts = ['<h2 id="samples">Samples</h2>']
    if samples:
        steps = sorted({s.get("step") for s in samples if isinstance(s.get("step"), int)})
        shown = [s for s in samples if steps and s.get("step") in (steps[0], steps[-1])][:MAX_SAMPLES]
        if len(steps) > 1:
            when = f"at the first and last steps that logged samples ({_esc(steps[0])} and {_esc(steps[-1])})"
        else:
            when = f"at step {_esc(steps[0])}, the only step that logged samples" if steps else "(no step numbers)"
        parts.append(f"<p>The policy's responses during training (samples.jsonl), {when}.</p>")
        parts.append(_sample_table(shown))
    if eval_samples:
        parts.append("<p>Held-out prompts at the end (eval_samples.jsonl).</p>")
        parts.append(_sample_table(eval_samples[:MAX_SAMPLES]))
    if len(parts) == 1:
        parts.append('<p class="note">This run wrote no samples.</p>')
    return "\n".join(parts)


def render_run(run_dir: Path, rows: list[dict], summary: dict, figures: dict[str, str], config_text: str | None,
               samples: list[dict], eval_samples: list[dict]) -> str:
    """The whole page as a string."""
    stage = summary.get("stage") or run_kind(run_dir, rows)
    title = f"rlhf {stage} run: {run_dir.name}"
    config = (f"<pre>{html.escape(config_text)}</pre>" if config_text
              else '<p class="note">No config.yaml.</p>')
    sections = [_summary_section(summary, rows), _guard_section(summary, figures), _curves_section(figures),
                _samples_section(samples, eval_samples),
                f'<h2 id="config">Configuration</h2>\n{config}',
                f'<h2 id="summary-json">summary.json</h2>\n<pre>{html.escape(json.dumps(summary, indent=2))}</pre>']
    body = "\n\n".join(s for s in sections if s)
    return page(title, f"""<h1>{html.escape(title)}</h1>
<p class="lede">{html.escape(str(run_dir))} · {len(rows)} logged steps</p>
<nav><a href="#summary">Summary</a> · <a href="#guard">Guard</a> · <a href="#curves">Training curves</a> ·
<a href="#samples">Samples</a> · <a href="#config">Configuration</a></nav>

{body}""")


def run(run_dir: str | Path) -> Path:
    """`rlhf report RUN_DIR`."""
    return write_run_report(run_dir)
