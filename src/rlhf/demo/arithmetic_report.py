"""The HTML report of `rlhf demo --task arithmetic`, built from the pieces of the main demo's report.

`write_report(demo_dir)` reads summary.json and the run directories it names and writes
`demo_dir/report.html` with figures under `demo_dir/figures/`: the headline table (held-out
greedy and sampled pass@1, pass@k, KL to SFT, wall time of SFT and every RL run), accuracy
against KL (`rlhf.eval.plots.frontier`), the RL training curves (`plots.training_curves`), the
greedy answers of every policy to the same held-out problems, and each step's config.yaml
(`rlhf.demo.report`'s section). As in the main report, every number from summary.json sits in an
element with `data-key="<dotted path>"` showing `format_number(value)`, and all text is escaped.
"""

from __future__ import annotations

import html
from pathlib import Path

from ..eval import plots
from ..eval.report_data import format_number, page
from .report import _config_section, _figure, _keyed, load_runs
from .report_runs import read_summary

CURVES = [("reward", "training reward (share of right answers)"), ("kl_k3", "KL to SFT (rollouts, k3)"),
          ("entropy", "entropy (nats/token)"), ("response_length", "response length (tokens)"),
          ("clipfrac", "clip fraction"), ("approx_kl", "approx KL old→new")]


def draw_figures(demo_dir: Path, summary: dict, runs: dict) -> dict[str, str]:
    figures_dir = demo_dir / "figures"
    figures: dict[str, str] = {}
    points = [{"method": p["name"], "kl_to_ref": p["kl_to_ref"], "gold_reward": p["sampled_accuracy"], "dir": p["dir"]}
              for p in summary.get("policies", [])]
    if points:
        path = plots.frontier(points, figures_dir / "accuracy-vs-kl.png")
        figures["accuracy_vs_kl"] = path.relative_to(demo_dir).as_posix()
    rl = {p["name"]: runs[p["dir"]].rows for p in summary.get("policies", [])[1:] if p["dir"] in runs and runs[p["dir"]].rows}
    if rl:
        path = plots.training_curves(rl, CURVES, "RL against the exact-match checker", figures_dir / "curves-rl.png")
        if path is not None:  # None: no run logged any of the curves' metrics
            figures["curves_rl"] = path.relative_to(demo_dir).as_posix()
    return figures


def _headline(summary: dict) -> str:
    columns = [("greedy_accuracy", "greedy pass@1"), ("sampled_accuracy", "sampled pass@1"),
               ("pass_at_k", f"pass@{summary.get('k', 'k')}"), ("sampled_accuracy_vs_sft", "sampled pass@1 − SFT"),
               ("kl_to_ref", "KL to SFT (nats)"), ("train_reward", "last training reward"), ("wall_s", "wall time (s)")]
    head = "".join(f"<th class=num>{html.escape(title)}</th>" for _, title in columns)
    rows = []
    for i, policy in enumerate(summary.get("policies", [])):
        ci = f"{_keyed(summary, f'policies.{i}.greedy_ci_low')} – {_keyed(summary, f'policies.{i}.greedy_ci_high')}"
        cells = "".join(_keyed(summary, f"policies.{i}.{key}", "td", "num") for key, _ in columns)
        rows.append(f"<tr><td>{_keyed(summary, f'policies.{i}.name')}</td><td class=num>{ci}</td>{cells}</tr>")
    return f"""<h2 id="headline">Held-out accuracy</h2>
<table>
<tr><th>policy</th><th class=num>greedy 95% CI</th>{head}</tr>
{chr(10).join(rows)}
</table>
<p class="lede">Every policy answers the same {_keyed(summary, "eval_prompts")} held-out problems (none of them
seen in SFT or RL): once greedily (greedy pass@1, with a normal 95% interval) and
{_keyed(summary, "k")} times at temperature 1 (sampled pass@1: the share of right samples; pass@k: the unbiased
estimate of the chance that k samples hold a right one, Chen et al. 2021). A response is right when its final
number equals the answer (<code>{html.escape(str(summary.get("reward", "")))}</code>). KL: exact KL(policy ‖ SFT)
of the next-token distributions summed over each sampled response, in nats. RL runs
{_keyed(summary, "rl_steps")} steps of {_keyed(summary, "rl_samples")} samples per prompt at learning rate
{_keyed(summary, "rl_lr")}.</p>"""


def _samples(summary: dict, runs: dict, max_samples: int = 10) -> str:
    evals = {p["name"]: runs[p["dir"]].eval for p in summary.get("policies", [])
             if p["dir"] in runs and runs[p["dir"]].eval}
    if not evals:
        return '<h2 id="samples">Greedy answers</h2><p class="note">No eval.json found.</p>'
    names = list(evals)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    first = evals[names[0]].get("samples", [])
    for index, sample in enumerate(first[:max_samples]):
        cells = []
        for name in names:
            samples = evals[name].get("samples", [])
            s = samples[index] if index < len(samples) else {}
            mark = "✓" if s.get("correct") else "✗"
            cells.append(f"<td>{html.escape(str(s.get('greedy', '')))} {mark} "
                         f"<small>({html.escape(format_number(s.get('sampled_right')))} of "
                         f"{html.escape(format_number(summary.get('k')))} sampled right)</small></td>")
        rows.append(f"<tr><td><code>{html.escape(str(sample.get('prompt', '')))}</code></td>{''.join(cells)}</tr>")
    return (f'<h2 id="samples">Greedy answers to the same held-out problems</h2>\n<table><tr><th>problem</th>{head}'
            f"</tr>{''.join(rows)}</table>")


def render(summary: dict, runs: dict, figures: dict[str, str]) -> str:
    frontier_caption = ("Sampled pass@1 on the held-out problems against KL to SFT: what each RL run bought and what "
                        "it spent. SFT sits at KL 0.")
    curves_caption = ("Each RL run along training: reward (the share of right answers among the rollouts), KL to "
                      "SFT, entropy, response length, clip fraction and approximate KL between the rollout policy "
                      "and the updated one.")
    sections = [_headline(summary),
                '<h2 id="frontier">Accuracy against KL</h2>\n'
                + _figure(figures, "accuracy_vs_kl", "sampled pass@1 against KL to SFT", frontier_caption),
                '<h2 id="curves">Training curves</h2>\n'
                + _figure(figures, "curves_rl", "RL training curves", curves_caption),
                _samples(summary, runs), _config_section(summary, runs)]
    body = "\n\n".join(sections)
    return page("RLHF demo report: arithmetic", f"""<h1>RL with a verifiable reward: arithmetic</h1>
<p class="lede">Additions and subtractions of whole numbers from 0 to {_keyed(summary, "max_operand")} ("17+8=").
SFT learns the format and some of the arithmetic from {_keyed(summary, "demonstrations")} worked problems; GRPO and its variants then train against a program that checks the
answer, with no reward model and no labels.</p>
<p class="meta">Total wall time {_keyed(summary, "wall_s")} s · seed {_keyed(summary, "seed")} · quick mode
{_keyed(summary, "quick")}</p>
<nav><a href="#headline">Accuracy</a> · <a href="#frontier">Accuracy vs KL</a> · <a href="#curves">Training
curves</a> · <a href="#samples">Answers</a> · <a href="#config">Configuration</a></nav>

{body}""")


def write_report(demo_dir: Path) -> Path:
    """Write demo_dir/report.html and its figures; returns the page's path."""
    demo_dir = Path(demo_dir)
    summary = read_summary(demo_dir, "rlhf demo --task arithmetic")
    runs = load_runs(demo_dir, summary)
    figures = draw_figures(demo_dir, summary, runs)
    out = demo_dir / "report.html"
    out.write_text(render(summary, runs, figures), encoding="utf-8")
    return out
