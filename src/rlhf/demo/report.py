"""The demo's HTML report: one self-contained page that shows what each RLHF method bought and at what cost.

`write_report(demo_dir)` reads what `rlhf demo` left in `demo_dir` (summary.json and one run
directory per step) and writes `demo_dir/report.html` with its PNG figures in `demo_dir/figures/`.
The page has no JavaScript and loads nothing from the network (inline CSS, images by relative
link), so it can be opened from disk or mailed as a folder. From top to bottom it shows:

- the headline table, per method: gold (oracle) reward, win rate against SFT with its 95% interval
  and at equal length, KL to SFT, EOS share, wall time; the reward model's accuracy vs the oracle;
- gold reward against KL to SFT for every run (PPO and DPO swept over KL strengths with --frontier);
- proxy against gold along PPO training: the reward model's score can keep rising while the
  oracle's stops, which is over-optimisation (Goodhart), visible here because the oracle is known;
- the reward model: accuracy against noisy labels and against the oracle, and a reliability
  diagram (is its confidence sigmoid(|r_a - r_b|) the rate at which it is right?);
- training curves of every stage, before/after samples for the same prompts with gold scores,
  and the resolved config.yaml of every step.

Every number taken from summary.json sits in an element with `data-key="<dotted path>"` (list
items by index, e.g. `steps.0.wall_s`) and reads `format_number(value)`, so a test can check the
page against the file. Values the file lacks show as "–" without a data-key. All text, model
outputs included, goes through html.escape.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from ..eval import plots
from ..data.files import read_json
from ..eval.report_data import MISSING, format_number, page
from .report_runs import METHODS, Run, load_runs, lookup, read_summary

__all__ = ["METHODS", "MISSING", "Run", "format_number", "load_runs", "lookup", "render", "write_report"]


def draw_figures(demo_dir: Path, summary: dict, runs: dict[str, Run], eval_gold: dict | None) -> dict[str, str]:
    """Write every figure under demo_dir/figures; returns {figure name: path relative to demo_dir}."""
    figures_dir = demo_dir / "figures"
    figures: dict[str, str] = {}

    def keep(name: str, path: Path | None) -> None:
        if path is not None:  # None: the figure had nothing to show
            figures[name] = path.relative_to(demo_dir).as_posix()

    headline = {m: summary[m]["dir"] for m in METHODS if isinstance(summary.get(m), dict) and "dir" in summary[m]}
    strength = {"ppo": "KL coef", "dpo": "β"}  # labels only for a sweep; one run's strength is in the table
    swept = summary.get("frontier_sweep", True)
    points = [{**p, "label": f"{strength.get(p.get('method'), '')}={p['kl_strength']:g}"
               if swept and isinstance(p.get("kl_strength"), (int, float)) else None} for p in summary.get("frontier", [])]
    points += [{**summary[m], "method": m} for m in ("sft", "rloo", "grpo", "online_dpo") if isinstance(summary.get(m), dict)]
    keep("frontier", plots.frontier(points, figures_dir / "frontier.png", headline))

    ppo_runs = {r.name: r.rows for r in runs.values() if r.kind == "policy" and plots.method_of(r.name) == "ppo"}
    ppo_runs = ppo_runs or {r.name: r.rows for r in runs.values() if r.kind == "policy"}
    if ppo_runs:
        keep("proxy_vs_gold", plots.proxy_vs_gold(ppo_runs, headline.get("ppo"), figures_dir / "proxy-vs-gold.png"))
    if eval_gold:
        keep("rm_calibration", plots.reward_model_calibration(eval_gold, figures_dir / "rm-calibration.png"))

    for kind, (title, _, panels) in plots.STAGE_CURVES.items():  # "policy-diagnostics" draws the "policy" runs
        group = {r.name: r.rows for r in runs.values() if r.kind == kind.split("-")[0] and r.rows}
        if group:
            path = figures_dir / f"curves-{kind}.png"
            keep(f"curves-{kind}", plots.training_curves(group, panels, title, path))
    return figures


# ---------------------------------------------------------------- HTML

def _keyed(summary: dict, dotted: str, tag: str = "span", css: str = "") -> str:
    """`<tag data-key=...>format_number(value)</tag>`, or a plain "–" where summary.json lacks the path."""
    cls = f' class="{css}"' if css else ""
    try:
        value = lookup(summary, dotted)
    except KeyError:
        return f"<{tag}{cls}>{MISSING}</{tag}>"
    return f'<{tag}{cls} data-key="{html.escape(dotted)}">{html.escape(format_number(value))}</{tag}>'


def _figure(figures: dict[str, str], name: str, alt: str, caption: str) -> str:
    if name not in figures:
        return f'<p class="note">No data for this figure ({html.escape(alt)}).</p>'
    return (f'<figure><img src="{html.escape(figures[name])}" alt="{html.escape(alt)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _best(summary: dict, key: str) -> str | None:
    scores = {m: summary[m][key] for m in METHODS if isinstance(summary.get(m), dict)
              and isinstance(summary[m].get(key), (int, float)) and not isinstance(summary[m].get(key), bool)}
    return max(scores, key=scores.get) if scores else None


def _headline_section(summary: dict) -> str:
    best_gold, best_win = _best(summary, "gold_reward"), _best(summary, "win_rate_vs_sft")
    rows = []
    for m in METHODS:
        if not isinstance(summary.get(m), dict):
            continue
        ci = (f"{_keyed(summary, f'{m}.ci_low')} – {_keyed(summary, f'{m}.ci_high')}"
              if "ci_low" in summary[m] or "ci_high" in summary[m] else MISSING)
        rows.append(
            f"<tr><td>{m.upper().replace('_', ' ')}</td><td>{_keyed(summary, f'{m}.dir', 'code')}</td>"
            f"<td class=num>{_keyed(summary, f'{m}.kl_strength')}</td>"
            f"{_keyed(summary, f'{m}.gold_reward', 'td', 'num best' if m == best_gold else 'num')}"
            f"{_keyed(summary, f'{m}.win_rate_vs_sft', 'td', 'num best' if m == best_win else 'num')}"
            f"<td class=num>{ci}</td>{_keyed(summary, f'{m}.lc_win_rate_vs_sft', 'td', 'num')}"
            f"{_keyed(summary, f'{m}.kl_to_ref', 'td', 'num')}{_keyed(summary, f'{m}.eos_share', 'td', 'num')}"
            f"{_keyed(summary, f'{m}.wall_s', 'td', 'num')}</tr>")
    return f"""<h2 id="headline">Headline</h2>
<table>
<tr><th>method</th><th>run</th><th class=num>KL strength</th><th class=num>gold reward</th>
<th class=num>win rate vs SFT</th><th class=num>95% CI</th><th class=num>length-controlled win rate</th>
<th class=num>KL to SFT (nats)</th><th class=num>ends with EOS</th><th class=num>wall time (s)</th></tr>
{chr(10).join(rows)}
</table>
<p>Reward model accuracy against the gold oracle: <strong>{_keyed(summary, "rm.accuracy_vs_gold")}</strong>
on {_keyed(summary, "rm.n_vs_gold")} held-out pairs (against its own noisy training labels:
{_keyed(summary, "rm.accuracy_vs_labels")}; trained in {_keyed(summary, "rm.wall_s")} s).</p>
<p class="lede">Gold reward: the noiseless oracle's mean score of the policy's responses to the held-out
prompts. Win rate: share of those prompts where the oracle prefers the policy's response to SFT's (ties
count half). KL: sequence-level KL(policy ‖ SFT) in nats per response on the policy's own samples,
the exact KL between the two models' next-token distributions summed over each response: unbiased and
never negative. (The sampled estimate log π(y) − log π_SFT(y), "k1", is unbiased too but can come out
below 0 near KL 0, since a sampled token can be likelier under SFT; it is kept in the evaluation's JSON
as <code>kl_to_reference_k1</code>. See J. Schulman, "Approximating KL divergence", 2020.) KL strength:
the KL coefficient of PPO, RLOO and GRPO, β of DPO, for the run shown here. Length-controlled win rate: the win
rate at equal response length, from a logistic regression of each outcome on the length difference (as AlpacaEval 2
does); far below the raw one, the policy wins partly by writing longer. Ends with EOS: share of the policy's
responses that stop by themselves before the token limit. Shaded: best of the column.</p>"""


def _frontier_section(summary: dict, figures: dict[str, str]) -> str:
    numbers = ("kl_strength", "kl_to_ref", "gold_reward", "win_rate_vs_sft")
    rows = ["<tr>" + "".join(_keyed(summary, f"frontier.{i}.{key}", "td", "num" if key in numbers else "")
                             for key in ("method", "dir", *numbers)) + "</tr>"
            for i in range(len(summary.get("frontier", [])))]
    swept = ("PPO (KL coefficient) and DPO (β) are swept over KL strengths" if summary.get("frontier_sweep", True)
             else "PPO and DPO run at one KL strength each (<code>rlhf demo --frontier</code> sweeps both over three)")
    caption = (f"Each point is one trained policy evaluated on the same held-out prompts. {swept}; RLOO, GRPO and "
               "online DPO are single runs; SFT sits at KL 0. A method is better when its curve lies above another's "
               "at the same KL. Ringed: the run in the headline table.")
    table = ("<table><tr><th>method</th><th>run</th><th class=num>KL strength</th><th class=num>KL to SFT</th>"
             f"<th class=num>gold reward</th><th class=num>win rate vs SFT</th></tr>{''.join(rows)}</table>"
             if rows else "")
    return (f'<h2 id="frontier">Reward against KL</h2>\n'
            f"{_figure(figures, 'frontier', 'gold reward against KL to reference', caption)}\n{table}")


def _overoptimisation_section(figures: dict[str, str]) -> str:
    caption = ("The proxy is the learned reward model's score, which PPO maximises; the gold is the oracle's, "
               "which it cannot see. Early in training both rise together. Where the proxy keeps rising while the "
               "gold flattens or falls, the policy is exploiting the reward model's errors: over-optimisation. "
               "A larger KL coefficient holds the policy closer to SFT and delays it. Curves are smoothed "
               "(exponential moving average, weight 0.6) when a run logged more than 12 steps.")
    return (f'<h2 id="overoptimisation">Proxy against gold reward along PPO training</h2>\n'
            f"{_figure(figures, 'proxy_vs_gold', 'proxy and gold reward along PPO training', caption)}")


def _reward_model_section(summary: dict, figures: dict[str, str], eval_gold: dict | None) -> str:
    caption = ("Pairs are binned by the reward model's confidence in its choice, sigmoid(|r_a − r_b|). In a "
               "calibrated model each bin's accuracy against the oracle equals its mean confidence (the dashed "
               "diagonal); points below it are over-confident. ECE: count-weighted mean gap.")
    parts = ['<h2 id="reward-model">Reward model</h2>',
             f"<p>Accuracy against the gold oracle {_keyed(summary, 'rm.accuracy_vs_gold')} "
             f"(n = {_keyed(summary, 'rm.n_vs_gold')} held-out pairs); against its noisy training labels "
             f"{_keyed(summary, 'rm.accuracy_vs_labels')}. The labels come from the oracle with Bradley–Terry noise "
             "(like human annotators), so accuracy against them is capped below 1 even for a perfect model.</p>"]
    if eval_gold:
        stats = " · ".join(f"{name} {html.escape(format_number(eval_gold.get(key)))}" for name, key in
                           (("pairs", "n"), ("accuracy", "accuracy"), ("ECE", "ece"), ("mean margin", "mean_margin"),
                            ("loss", "loss")))
        parts.append(f"<p>From the gold evaluation file: {stats}.</p>")
    parts.append(_figure(figures, "rm_calibration", "reward model reliability diagram", caption))
    if eval_gold and eval_gold.get("calibration"):
        cells = ("n", "confidence", "accuracy")
        rows = "".join(f"<tr><td>[{format_number(r.get('lo'))}, {format_number(r.get('hi'))})</td>"
                       + "".join(f"<td class=num>{format_number(r.get(key))}</td>" for key in cells)
                       + "</tr>" for r in eval_gold["calibration"])
        parts.append("<details><summary>Reliability table</summary><table><tr><th>confidence bin</th>"
                     "<th class=num>pairs</th><th class=num>mean confidence</th><th class=num>accuracy</th></tr>"
                     f"{rows}</table></details>")
    return "\n".join(parts)


def _curves_section(figures: dict[str, str]) -> str:
    parts = ['<h2 id="curves">Training curves</h2>',
             '<p class="lede">Every logged step of every run, against the optimiser step. Batch figures are '
             "noisy; runs with more than 12 logged steps show the raw values faintly under a smoothed line.</p>"]
    for kind, (_, caption, _) in plots.STAGE_CURVES.items():
        if f"curves-{kind}" in figures:
            parts.append(_figure(figures, f"curves-{kind}", f"training curves: {kind}", html.escape(caption)))
    return "\n".join(parts)


def _samples_section(summary: dict, runs: dict[str, Run], max_samples: int) -> str:
    evals = {m: runs[summary[m]["dir"]].eval for m in METHODS[1:]
             if isinstance(summary.get(m), dict) and summary[m].get("dir") in runs and runs[summary[m]["dir"]].eval}
    parts = ['<h2 id="samples">Samples: SFT against each method on the same prompts</h2>']
    if not evals:
        return parts[0] + '\n<p class="note">No eval.json with samples in the headline runs.</p>'
    parts.append('<p class="lede">Responses sampled once per prompt (same prompts, same sampling settings); '
                 "gold is the noiseless oracle's score of that response.</p>")
    by_prompt = {m: {s.get("prompt"): s for s in e.get("samples", [])} for m, e in evals.items()}
    first = next(iter(evals.values())).get("samples", [])
    for sample in first[:max_samples]:
        prompt = sample.get("prompt", "")
        rows = [("SFT", sample.get("reference", ""), sample.get("reference_score"))]
        rows += [(m.upper().replace("_", " "), s.get("policy", ""), s.get("policy_score"))
                 for m, s in ((m, by_prompt[m].get(prompt)) for m in evals) if s is not None]
        body = "".join(f"<tr><td>{html.escape(name)}</td><td class=text>{html.escape(str(text))}</td>"
                       f"<td class=num>{html.escape(format_number(score))}</td></tr>" for name, text, score in rows)
        parts.append(f'<div class="sample"><div class="prompt"><strong>Prompt:</strong> {html.escape(str(prompt))}'
                     f"</div><table><tr><th>model</th><th>response</th><th class=num>gold</th></tr>{body}"
                     "</table></div>")
    return "\n".join(parts)


def _config_section(summary: dict, runs: dict[str, Run]) -> str:
    """One line per step; a step that trained gets its config.yaml, once per run directory, in a <details>."""
    parts = ['<h2 id="config">Configuration of every step</h2>',
             '<p class="lede">Each training run\'s resolved config.yaml: enough to rerun it alone.</p>']
    shown: dict[str, str] = {}  # run dir -> the step whose config is shown
    for i, step in enumerate(summary.get("steps", [])):
        run, name = runs.get(step.get("dir")), html.escape(str(step.get("name", "")))
        where, wall = _keyed(summary, f"steps.{i}.dir", "code"), _keyed(summary, f"steps.{i}.wall_s")
        head = f"<strong>{name}</strong> ({where}, {wall} s)"
        if run and run.config_text and run.name not in shown:
            shown[run.name] = name
            parts.append(f"<details><summary>{head}</summary><pre>{html.escape(run.config_text)}</pre></details>")
        elif run and run.name in shown:
            parts.append(f'<p class="step">{head}: same run directory as {shown[run.name]}</p>')
        else:
            parts.append(f'<p class="step">{head}: no config.yaml</p>')
    return "\n".join(parts)


def _wilson(share: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a proportion `share` observed on `n` trials."""
    centre, half = share + z * z / (2 * n), z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def noise_notes(summary: dict) -> list[str]:
    """Plain sentences for the top of the page where the numbers below cannot be told from noise:
    quick mode, a reward model whose accuracy against the oracle is within chance of 0.5, and win
    rates whose every interval holds 0.5. Empty when the numbers stand."""
    notes = []
    if summary.get("quick"):
        notes.append(f"Quick mode: {format_number(summary.get('label_budget'))} labels, "
                     f"{format_number(summary.get('eval_prompts'))} eval prompts and a few steps per method. It shows "
                     "that every step of the pipeline runs, not what the methods do: read the numbers below as noise. "
                     "<code>rlhf demo</code> without --quick gives results.")
    rm = summary.get("rm") if isinstance(summary.get("rm"), dict) else {}
    accuracy, n = rm.get("accuracy_vs_gold"), rm.get("n_vs_gold")
    if isinstance(accuracy, (int, float)) and isinstance(n, int) and n > 0:
        low, high = _wilson(accuracy, n)
        if low <= 0.5 <= high:
            notes.append(f"The reward model's accuracy against the oracle, {format_number(accuracy)} on {n} pairs "
                         f"(95% interval {format_number(low)}–{format_number(high)}), is not distinguishable from "
                         "chance (0.5): the policies below were optimised against a reward that may carry no signal.")
    intervals = [(m, summary[m].get("ci_low"), summary[m].get("ci_high")) for m in METHODS[1:]
                 if isinstance(summary.get(m), dict)]
    intervals = [(m, lo, hi) for m, lo, hi in intervals
                 if isinstance(lo, (int, float)) and isinstance(hi, (int, float))]
    if intervals and all(lo <= 0.5 <= hi for _, lo, hi in intervals):
        widest = max(hi - lo for _, lo, hi in intervals)
        notes.append(f"Every win rate's 95% interval holds 0.5 (the widest spans {format_number(widest)}): on these "
                     "prompts no method is shown better or worse than SFT.")
    return notes


def render(summary: dict, runs: dict[str, Run], figures: dict[str, str], eval_gold: dict | None,
           max_samples: int = 6) -> str:
    """The whole page as a string."""
    meta = (f'<p class="meta">Total wall time {_keyed(summary, "wall_s")} s · label budget '
            f'{_keyed(summary, "label_budget")} comparisons · oracle temperature '
            f'{_keyed(summary, "oracle_temperature")} · eval prompts {_keyed(summary, "eval_prompts")} · quick mode '
            f'{_keyed(summary, "quick")}</p>')
    notes = "".join(f'<p class="note noise">{note}</p>' for note in noise_notes(summary))
    sections = [_headline_section(summary), _frontier_section(summary, figures), _overoptimisation_section(figures),
                _reward_model_section(summary, figures, eval_gold), _curves_section(figures),
                _samples_section(summary, runs, max_samples), _config_section(summary, runs)]
    body = "\n\n".join(sections)
    return page("RLHF demo report", f"""<h1>RLHF demo report</h1>
<p class="lede">Continue a story opening so that it is positive. A scripted sentiment oracle labels
preference pairs (with human-like noise) to train a reward model; SFT is then optimised with PPO, RLOO,
GRPO and DPO, and every policy is judged by the same oracle without noise (the gold reward).</p>
{meta}
{notes}
<nav><a href="#headline">Headline</a> · <a href="#frontier">Reward vs KL</a> ·
<a href="#overoptimisation">Proxy vs gold</a> · <a href="#reward-model">Reward model</a> ·
<a href="#curves">Training curves</a> · <a href="#samples">Samples</a> · <a href="#config">Configuration</a></nav>

{body}

<p class="lede" style="margin-top:3rem">Numbers: 3 decimals below 10, 2 below 100, 1 below 1000, none above;
"–" where a figure is missing.</p>""")


def write_report(demo_dir: Path, max_samples: int = 6) -> Path:
    """Write demo_dir/report.html and its figures under demo_dir/figures/; returns the page's path."""
    demo_dir = Path(demo_dir)
    summary = read_summary(demo_dir, "rlhf demo")
    runs = load_runs(demo_dir, summary)
    rm = summary.get("rm") if isinstance(summary.get("rm"), dict) else {}
    gold_path = demo_dir / rm["eval_gold"] if rm.get("eval_gold") else demo_dir / rm.get("dir", "rm") / "eval_gold.json"
    eval_gold = read_json(gold_path, missing_ok=True)
    figures = draw_figures(demo_dir, summary, runs, eval_gold)
    out = demo_dir / "report.html"
    out.write_text(render(summary, runs, figures, eval_gold, max_samples), encoding="utf-8")
    return out


def run(demo_dir: str | Path) -> Path:
    """`rlhf report DEMO_DIR`."""
    return write_report(Path(demo_dir))
