"""The figures of the demo report (`rlhf.demo.report`) and of any run's (`rlhf.eval.run_report`), drawn
with matplotlib's Agg backend.

Each function takes plain data (metric rows, summary dicts, the reward-model report) and a PNG
path, draws one figure and closes it. Nothing here reads a run directory or knows about HTML.
A run's metric rows are the dicts of its `metrics.jsonl`; runs are passed as {label: rows} and
drawn in the order given, each in the colour `run_color(label)` gives it in every figure.

What every figure keeps to (tests/eval/test_report_figures.py renders each and checks): legends
sit outside the axes, so none covers a point; two series that can coincide differ in line style
and marker, not only in colour; steps are whole numbers on the x axis; titles wrap to stay inside
the figure; a figure with nothing to show is not drawn (the function returns None).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display, no GUI toolkit: the report is written on headless machines
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 110
Rows = Sequence[Mapping]
METHOD_COLORS = {"sft": "#7f7f7f", "ppo": "#1f77b4", "rloo": "#2ca02c", "grpo": "#9467bd", "dpo": "#d62728",
                 "online_dpo": "#ff7f0e"}
# Runs of one method at several KL strengths: shades of the method's colour, lightest = weakest.
_SHADES = {"ppo": ["#9ecae1", "#4292c6", "#08519c", "#08306b"], "dpo": ["#fc9272", "#ef3b2c", "#a50f15", "#67000d"]}
_SCHEDULES = {"lr", "kl_coef"}  # set, not measured: drawn as logged, never smoothed
_MARKERS = {"sft": "*", "ppo": "o", "rloo": "^", "grpo": "D", "dpo": "s", "online_dpo": "P"}
# Runs drawn over one another (the same start, a quick run's identical first steps) stay apart by their dashes.
_DASHES = ["-", "--", ":", "-."]

# The training-curve figures: {kind of run: (figure title, caption, [(metric key, panel title), ...])}.
STAGE_CURVES = {
    "sft": ("Supervised fine-tuning", "Next-token loss on the demonstrations and the learning-rate schedule.",
            [("loss", "loss (next-token cross-entropy)"), ("lr", "learning rate")]),
    "rm": ("Reward model", "Bradley–Terry loss, accuracy and margin on training batches of noisy labelled pairs.",
           [("loss", "loss (Bradley–Terry)"), ("accuracy", "batch accuracy vs labels"),
            ("margin", "margin r_chosen − r_rejected"), ("lr", "learning rate")]),
    "policy": ("PPO, RLOO and GRPO",
               "Proxy and gold reward, KL to the reference measured on each batch of rollouts (the k3 "
               "estimator per response: unbiased and never negative, where k1, the reward's default, can dip "
               "below 0 on a batch; metrics.jsonl has both), policy entropy, "
               "response length and the share of responses that ended before the token limit.",
               [("reward", "proxy reward (reward model)"), ("gold", "gold reward (oracle)"),
                ("kl_k3", "KL to reference (rollouts, k3)"), ("entropy", "entropy (nats/token)"),
                ("response_length", "response length (tokens)"), ("eos_rate", "share ending with EOS")]),
    "policy-diagnostics": ("PPO, RLOO and GRPO: optimisation diagnostics",
                           "Health of the updates: clip fraction and approximate KL between the rollout policy and "
                           "the updated one; the critic's loss and explained variance (PPO only); the KL coefficient.",
                           [("loss", "loss"), ("clipfrac", "clip fraction"), ("approx_kl", "approx KL old→new"),
                            ("value_loss", "value loss (PPO)"), ("explained_variance", "explained variance (PPO)"),
                            ("kl_coef", "KL coefficient")]),
    "dpo": ("DPO at several betas",
            "DPO loss and its implicit rewards β·log(π/π_ref) of chosen and rejected responses on training "
            "batches; log p(chosen) falling with both rewards is DPO's known drift.",
            [("loss", "loss"), ("reward_accuracy", "implicit reward accuracy"), ("reward_margin", "implicit margin"),
             ("reward_chosen", "implicit reward, chosen"), ("reward_rejected", "implicit reward, rejected"),
             ("logp_chosen", "log p(chosen)")]),
    "other": ("Other steps", "Loss of steps of no known kind.", [("loss", "loss")]),
}


def method_of(label: str) -> str:
    """'ppo-kl0.05' -> 'ppo', 'runs/dpo-beta0.1' -> 'dpo', 'rloo' -> 'rloo': the run directory's name up to a dash."""
    return label.rstrip("/").rsplit("/", 1)[-1].split("-")[0].lower()


def run_color(label: str, index_in_method: int = 0) -> str:
    method = method_of(label)
    shades = _SHADES.get(method)
    if shades:
        return shades[min(index_in_method, len(shades) - 1)]
    return METHOD_COLORS.get(method, "#333333")


def _colors(labels: Sequence[str]) -> dict[str, str]:
    """A colour per run; runs of the same method get successive shades."""
    seen: dict[str, int] = {}
    colors = {}
    for label in labels:
        method = method_of(label)
        colors[label] = run_color(label, seen.get(method, 0))
        seen[method] = seen.get(method, 0) + 1
    return colors


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """Exponential moving average, debiased so the first points are not pulled toward 0 (as TensorBoard)."""
    out, average, norm = [], 0.0, 0.0
    for v in values:
        average = weight * average + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(average / norm)
    return out


def _series(rows: Rows, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one metric, skipping rows without it or with a non-finite value."""
    points = [(r["step"], r[key]) for r in rows
              if isinstance(r.get(key), (int, float)) and math.isfinite(r[key]) and "step" in r]
    return [p[0] for p in points], [p[1] for p in points]


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _figure(rows: int, columns: int, size: tuple[float, float], **kwargs):
    """A figure laid out by matplotlib's constrained layout, which makes room for the suptitle and
    for legends placed outside the axes ("outside ..." locations)."""
    return plt.subplots(rows, columns, figsize=size, layout="constrained", **kwargs)


def _title(fig, text: str, fontsize: int = 12) -> None:
    """The figure's title, wrapped onto more lines where one line would run past the figure's edges."""
    title = fig.suptitle(text, fontsize=fontsize)
    width = title.get_window_extent(fig.canvas.get_renderer()).width
    if width > 0.95 * fig.bbox.width:
        title.set_text(textwrap.fill(text, max(16, int(len(text) * 0.95 * fig.bbox.width / width))))


def _legend_below(fig, axes, fontsize: int = 9) -> None:
    """One legend for the figure, under the axes and outside them, so it never covers a point;
    each label once."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncol=min(len(entries), 4),
                   fontsize=fontsize, frameon=False)


def _integer_steps(ax, xs: Sequence[float]) -> None:
    """Steps (and rounds) are whole numbers: ticks only at integers, and a lone step gets a range
    around it instead of matplotlib's ±0.4 (ticks 7.6 ... 8.4)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if xs and min(xs) == max(xs):
        ax.set_xlim(min(xs) - 1, max(xs) + 1)


def _grid(panels: int, width: float) -> tuple[int, int, tuple[float, float]]:
    columns = 1 if panels == 1 else 2 if panels in (2, 4) else 3
    rows = math.ceil(panels / columns)
    return rows, columns, (max(width * columns + 0.6, 6.4), 2.7 * rows + 1.2)


def training_curves(runs: Mapping[str, Rows], panels: Sequence[tuple[str, str]], title: str,
                    path: Path) -> Path | None:
    """A grid of panels (metric key, panel title), one line per run against the training step.

    Runs with more than 12 logged steps are drawn faintly as logged with a smoothed line on top
    (not schedules such as the learning rate, which are drawn as logged). Panels whose metric no
    run logged are left out; with none left there is no figure (None).
    """
    panels = [(key, name) for key, name in panels if any(_series(rows, key)[0] for rows in runs.values())]
    if not panels:
        return None
    grid_rows, columns, size = _grid(len(panels), 3.6)
    fig, axes = _figure(grid_rows, columns, size, squeeze=False)
    colors = _colors(list(runs))
    for ax, (key, name) in zip(axes.flat, panels):
        all_steps = []
        for i, (label, rows) in enumerate(runs.items()):
            steps, values = _series(rows, key)
            all_steps += steps
            if not steps:
                continue
            style = dict(color=colors[label], linestyle=_DASHES[i % len(_DASHES)])
            if len(steps) > 12 and key not in _SCHEDULES:
                ax.plot(steps, values, alpha=0.25, linewidth=1, **style)
                ax.plot(steps, smooth(values, 0.6), linewidth=1.8, label=label, **style)
            else:
                ax.plot(steps, values, linewidth=1.8, marker=".", label=label, **style)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useMathText=True)
        ax.grid(alpha=0.3)
        _integer_steps(ax, all_steps)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    _title(fig, title)
    if len(runs) > 1:
        _legend_below(fig, axes.flat[: len(panels)])
    return _save(fig, path)


def frontier(points: Sequence[Mapping], path: Path, headline: Mapping[str, str] | None = None) -> Path:
    """Gold reward against KL to the reference: one line per method swept over KL strengths.

    points: dicts {method, kl_to_ref, gold_reward, label (optional), dir (optional)}; methods with
    several points (ppo, dpo) are joined in order of KL, single points (sft, rloo, grpo) stand alone.
    headline: {method: dir} of the runs the headline table reports; those points get a black ring.
    The legend sits to the right of the axes, never over a point.
    """
    headline = headline or {}
    fig, ax = _figure(1, 1, (8.4, 4.6))
    by_method: dict[str, list[Mapping]] = {}
    for p in points:
        if _finite(p.get("kl_to_ref")) and _finite(p.get("gold_reward")):
            by_method.setdefault(p["method"], []).append(p)
    for method, group in by_method.items():
        group = sorted(group, key=lambda p: p["kl_to_ref"])
        xs, ys = [p["kl_to_ref"] for p in group], [p["gold_reward"] for p in group]
        color, marker = METHOD_COLORS.get(method, "#333333"), _MARKERS.get(method, "o")
        size = 14 if marker == "*" else 8
        ax.plot(xs, ys, color=color, marker=marker, markersize=size, linewidth=1.6 if len(group) > 1 else 0,
                label=method.upper().replace("_", " ") if method != "sft" else "SFT (reference)")
        for p in group:
            if p.get("dir") is not None and headline.get(method) == p.get("dir") and len(group) > 1:
                ax.plot(p["kl_to_ref"], p["gold_reward"], marker="o", markersize=15, markerfacecolor="none",
                        markeredgecolor="black", linewidth=0)
            if p.get("label"):
                ax.annotate(p["label"], (p["kl_to_ref"], p["gold_reward"]), textcoords="offset points",
                            xytext=(6, -11), fontsize=8, color=color)
    ax.set_xlabel("KL(policy ‖ SFT reference), nats per response")
    ax.set_ylabel("gold reward (oracle, mean over eval prompts)")
    ax.set_title("Reward–KL frontier: higher and further left is better")
    ax.grid(alpha=0.3)
    if by_method:
        fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=9)
    return _save(fig, path)


def proxy_vs_gold(runs: Mapping[str, Rows], headline: str | None, path: Path) -> Path:
    """Over-optimisation along PPO training, in two panels.

    Left: proxy (reward-model score) and gold (oracle) reward of the `headline` run against the
    step, on their own y axes, in different line styles and markers: two series of two points each
    fill their own axes from corner to corner, so without them one line hides the other. Right:
    gold against proxy for every PPO run, one path per KL coefficient from its first logged step
    (hollow marker) to its last, each in its own dashes (runs that start alike lie on one another);
    where the path turns flat or down the policy is still raising the reward model's score without
    raising the oracle's.
    """
    fig, (left, right) = _figure(1, 2, (11, 4.6))
    colors = _colors(list(runs))
    headline = headline if headline in runs else next(iter(runs), None)
    twin = None
    if headline is not None:
        steps, proxy = _series(runs[headline], "reward")
        gold_steps, gold = _series(runs[headline], "gold")
        weight = 0.6 if len(steps) > 12 else 0.0
        every = max(1, len(steps) // 12)
        left.plot(steps, smooth(proxy, weight), color="#1f77b4", linewidth=1.8, marker="o", markersize=9,
                  markevery=every, label="proxy (reward model), left axis")
        left.set_ylabel("proxy reward (reward-model score)", color="#1f77b4")
        left.tick_params(axis="y", colors="#1f77b4")
        twin = left.twinx()
        twin.plot(gold_steps, smooth(gold, weight), color="#ff7f0e", linewidth=1.8, linestyle="--", marker="s",
                  markersize=5, markerfacecolor="white", markevery=every, label="gold (oracle), right axis")
        twin.set_ylabel("gold reward (oracle)", color="#ff7f0e")
        twin.tick_params(axis="y", colors="#ff7f0e")
        left.set_title(f"{headline}: proxy and gold along training", fontsize=10)
        left.set_xlabel("step")
        left.grid(alpha=0.3)
        _integer_steps(left, steps + gold_steps)
    for i, (label, rows) in enumerate(runs.items()):
        pairs = [(r["reward"], r["gold"]) for r in rows if _finite(r.get("reward")) and _finite(r.get("gold"))]
        if not pairs:
            continue
        weight = 0.6 if len(pairs) > 12 else 0.0
        xs, ys = smooth([p[0] for p in pairs], weight), smooth([p[1] for p in pairs], weight)
        right.plot(xs, ys, color=colors[label], linewidth=1.6, linestyle=_DASHES[i % len(_DASHES)], label=label)
        right.plot(xs[0], ys[0], marker="o", markerfacecolor="white", markeredgecolor=colors[label], markersize=7)
        right.plot(xs[-1], ys[-1], marker="o", color=colors[label], markersize=7)
    right.set_xlabel("proxy reward (reward-model score)")
    right.set_ylabel("gold reward (oracle)")
    right.set_title("Gold against proxy, hollow = start, filled = end", fontsize=10)
    right.grid(alpha=0.3)
    _title(fig, "Proxy vs gold reward during PPO (smoothed)")
    _legend_below(fig, [left, *([twin] if twin is not None else []), right], fontsize=8)
    return _save(fig, path)


def reward_model_calibration(report: Mapping, path: Path) -> Path:
    """Reliability diagram and accuracy by prompt length of the reward model against the oracle.

    report: the dict of `rlhf.eval.reward` (keys accuracy, n, ece, calibration rows {lo, hi, n,
    confidence, accuracy}, by_prompt_length rows {lo, hi, n, accuracy}).
    """
    fig, (left, right) = _figure(1, 2, (11, 4.6), gridspec_kw={"width_ratios": [1.1, 1]})
    rows = [r for r in report.get("calibration", []) if r.get("n") and _finite(r.get("confidence"))]
    left.plot([0.5, 1], [0.5, 1], linestyle="--", color="#7f7f7f", linewidth=1, label="perfect calibration")
    if rows:
        total = sum(r["n"] for r in rows)
        left.bar([(r["lo"] + r["hi"]) / 2 for r in rows], [r["accuracy"] for r in rows],
                 width=[(r["hi"] - r["lo"]) * 0.9 for r in rows], color="#1f77b4", alpha=0.25,
                 label="observed accuracy per bin")
        left.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", color="#1f77b4",
                  linewidth=1.6, label="mean confidence vs accuracy")
        for r in rows:
            left.annotate(f"{100 * r['n'] / total:.0f}%", (r["confidence"], r["accuracy"]),
                          textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7, color="#333333")
    left.set_xlim(0.48, 1.02)
    left.set_ylim(0, 1.1)
    left.set_xlabel("confidence in its choice, sigmoid(|r_a − r_b|)")
    left.set_ylabel("share of pairs where the oracle agrees")
    left.set_title("Reliability diagram (labels: share of pairs in bin)", fontsize=10)
    left.grid(alpha=0.3)
    lengths = report.get("by_prompt_length", [])
    if lengths:
        names = [f"{r['lo']}–{r['hi']}" for r in lengths]
        right.bar(names, [r["accuracy"] for r in lengths], color="#2ca02c", alpha=0.8)
        for i, r in enumerate(lengths):
            right.annotate(f"n={r['n']}", (i, 0), textcoords="offset points", xytext=(0, 5), ha="center",
                           fontsize=8, color="white")
    if _finite(report.get("accuracy")):
        right.axhline(report["accuracy"], color="#333333", linestyle="--", linewidth=1, label="overall accuracy")
    right.axhline(0.5, color="#7f7f7f", linestyle=":", linewidth=1, label="chance (0.5)")
    right.set_ylim(0, 1.15)
    right.set_xlabel("prompt length (tokens)")
    right.set_ylabel("accuracy against the oracle")
    right.set_title("Accuracy by prompt length", fontsize=10)
    right.grid(alpha=0.3, axis="y")
    head = "Reward model against the noiseless oracle"
    if _finite(report.get("accuracy")):
        head += f": accuracy {report['accuracy']:.3f}"
        if _finite(report.get("n")):
            head += f" on {report['n']:g} pairs"
    if _finite(report.get("ece")):
        head += f", ECE {report['ece']:.3f}"
    _title(fig, head)
    _legend_below(fig, [left, right], fontsize=8)
    return _save(fig, path)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def guard_signals(rows: Rows, panels: Sequence[tuple[str, str]], path: Path, title: str,
                  thresholds: Mapping[str, float] | None = None, warnings: Sequence[Mapping] = (),
                  x_key: str = "step", marks: Mapping[str, float] | None = None) -> Path | None:
    """The over-optimisation guard of one run (`rlhf.train.guard_overopt`): one panel per logged
    metric (key, panel title), against `x_key`, with the signal's threshold as a dashed line and
    every warning step as a vertical line (red for that panel's own signal, grey for the others).

    rows: the run's metrics.jsonl; thresholds: {signal: threshold} (summary.json guard.thresholds,
    keys without the "guard/" prefix); warnings: {step, signal, ...}; marks: {label: x} drawn as
    dotted vertical lines in every panel (e.g. the best guard step). Panels with no data are left
    out; with none left there is no figure (None): a run shorter than the guard's window logs no
    signal yet, and an empty panel would say nothing.
    """
    thresholds, marks = thresholds or {}, marks or {}
    series = {key: [(r[x_key], r[key]) for r in rows if _finite(r.get(key)) and _finite(r.get(x_key))]
              for key, _ in panels}
    panels = [(key, name) for key, name in panels if series[key]]
    if not panels:
        return None
    grid_rows, columns, size = _grid(len(panels), 3.8)
    fig, axes = _figure(grid_rows, columns, size, squeeze=False)
    for ax, (key, name) in zip(axes.flat, panels):
        signal = key.removeprefix("guard/")
        for w in warnings:
            own = w.get("signal") == signal
            ax.axvline(w["step"], color="#d62728" if own else "#bbbbbb", linewidth=1.6 if own else 0.8,
                       alpha=0.9 if own else 0.6, label="warning (this signal)" if own else "warning (another)")
        for label, x in marks.items():
            ax.axvline(x, color="#2ca02c", linestyle=":", linewidth=1.4, label=label)
        xs, ys = [p[0] for p in series[key]], [p[1] for p in series[key]]
        ax.plot(xs, ys, color="#1f77b4", linewidth=1.6, marker="." if len(xs) <= 30 else None)
        if _finite(thresholds.get(signal)) and thresholds[signal] > 0:
            ax.axhline(thresholds[signal], color="#d62728", linestyle="--", linewidth=1, label="threshold")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(x_key.replace("_", " "), fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        _integer_steps(ax, xs)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    _title(fig, title)
    _legend_below(fig, axes.flat[: len(panels)], fontsize=8)
    return _save(fig, path)
