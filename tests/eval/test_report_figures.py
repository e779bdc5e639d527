"""Every report figure, rendered and inspected as a reader would look at it (issue 27, item 6):
no legend over a plotted point, two series that coincide still both visible, whole-number step
ticks, every title inside the figure, no empty axes. The data are shaped like the quick demo's:
one or two logged steps per run, runs that start alike, RLOO at the far right and bottom of the
reward-KL plane (where a legend in the lower right used to sit)."""

from __future__ import annotations

import json

import pytest

from rlhf.demo.report import draw_figures
from rlhf.demo.report_runs import Run
from rlhf.eval import plots
from rlhf.eval.run_report import GUARD_SIGNAL_PANELS, write_run_report

STEP_AXES = ("step", "guard round")


@pytest.fixture
def drawn(monkeypatch):
    """Every figure the plots module saves, kept open for inspection (closed at the end)."""
    figures = []
    save, close = plots._save, plots.plt.close

    def keep(fig, path):
        figures.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    monkeypatch.setattr(plots.plt, "close", lambda fig=None: None)  # closing would detach its canvas
    yield figures
    for fig in figures:
        close(fig)


def _points(line):
    """A line's vertices in display coordinates (its own transform: data, or blended for axvline)."""
    return line.get_transform().transform(line.get_xydata())


def check_figure(fig) -> None:
    """The checks every figure passes (pytest's assertion messages name the failing text or axes)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    edge = fig.bbox.padded(1)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    legends = list(fig.legends) + [ax.get_legend() for ax in axes if ax.get_legend() is not None]
    titles = [fig._suptitle] + [ax.title for ax in axes]
    for text in [t for t in titles if t is not None and t.get_text()] + [t for lg in legends for t in lg.get_texts()]:
        box = text.get_window_extent(renderer)
        assert edge.x0 <= box.x0 and box.x1 <= edge.x1 and edge.y0 <= box.y0 and box.y1 <= edge.y1, \
            f"text {text.get_text()!r} runs past the figure's edge"
    for ax in axes:
        assert ax.has_data(), f"empty axes {ax.get_title()!r}"
        if ax.get_xlabel() in STEP_AXES:
            low, high = sorted(ax.get_xlim())
            ticks = [t for t in ax.get_xticks() if low <= t <= high]
            assert ticks and all(float(t).is_integer() for t in ticks), f"{ax.get_title()!r}: step ticks {ticks}"
    for legend in legends:
        box = legend.get_window_extent(renderer).padded(5)  # a marker's radius around each point
        for ax in axes:
            for line in ax.get_lines():
                for x, y in _points(line):
                    if ax.bbox.contains(x, y):
                        assert not box.contains(x, y), f"the legend covers a point of {line.get_label()!r}"
            for artist in [*ax.texts, *ax.patches]:
                if artist.get_visible():
                    assert not box.overlaps(artist.get_window_extent(renderer)), "the legend covers a label or bar"


def _same_place(a, b) -> bool:
    pa, pb = _points(a), _points(b)
    return pa.shape == pb.shape and abs(pa - pb).max() < 2


def _rows(steps, **series):
    return [{"step": s, "loss": 1.0 / s, "lr": 5e-5, **{k: a + b * s for k, (a, b) in series.items()}} for s in steps]


POLICY = dict(reward=(0.0184, 0.0037), gold=(0.0737, 0.1184), kl_k3=(-0.03, 0.03), entropy=(2.3, 0.3),
              response_length=(16.0, 0.0), eos_rate=(0.0, 0.0), clipfrac=(0.2, -0.09), approx_kl=(0.01, -0.004),
              value_loss=(-0.1, 0.3), explained_variance=(0.0, 0.006), kl_coef=(0.05, 0.0))


def test_frontier_legend_covers_no_point(drawn, tmp_path):
    points = [{"method": "sft", "kl_to_ref": 0.0, "gold_reward": 0.26},
              *({"method": "ppo", "kl_to_ref": kl, "gold_reward": g, "dir": f"ppo-{kl}", "label": f"KL coef={c}"}
                for kl, g, c in ((0.0424, 0.149, 0.02), (0.0442, 0.189, 0.05), (0.0419, 0.202, 0.15))),
              {"method": "rloo", "kl_to_ref": 0.0469, "gold_reward": 0.04},  # far right, at the bottom
              {"method": "grpo", "kl_to_ref": 0.0146, "gold_reward": 0.196},
              *({"method": "dpo", "kl_to_ref": kl, "gold_reward": g} for kl, g in ((0.024, 0.042), (0.026, 0.27))),
              {"method": "online_dpo", "kl_to_ref": 0.0149, "gold_reward": 0.264}]
    plots.frontier(points, tmp_path / "frontier.png", {"ppo": "ppo-0.0442"})
    check_figure(drawn[-1])


def test_proxy_and_gold_stay_two_lines_where_they_coincide(drawn, tmp_path):
    runs = {name: _rows([1, 2], **POLICY) for name in ("ppo-kl0.02", "ppo-kl0.05", "ppo-kl0.15")}
    plots.proxy_vs_gold(runs, "ppo-kl0.05", tmp_path / "proxy-vs-gold.png")
    fig = drawn[-1]
    check_figure(fig)
    left, right = fig.axes[0], fig.axes[1]
    twin = next(ax for ax in fig.axes[2:] if ax.get_ylabel().startswith("gold"))
    proxy, gold = left.get_lines()[0], twin.get_lines()[0]
    assert _same_place(proxy, gold)  # two points on their own axes: corner to corner, one over the other
    assert (proxy.get_linestyle(), proxy.get_marker()) != (gold.get_linestyle(), gold.get_marker())
    assert proxy.get_marker() not in (None, "None", "") and gold.get_marker() not in (None, "None", "")
    paths = [line for line in right.get_lines() if len(line.get_xydata()) > 1]  # three identical paths
    assert len({line.get_linestyle() for line in paths}) == len(paths) == 3


def test_single_step_curves_get_whole_step_ticks(drawn, tmp_path):
    title, _, panels = plots.STAGE_CURVES["sft"]
    plots.training_curves({"sft": _rows([8])}, panels, title, tmp_path / "sft.png")
    check_figure(drawn[-1])
    assert 8 in list(drawn[-1].axes[0].get_xticks())  # not 7.6, 7.8, ..., 8.4


def test_a_guard_with_no_signal_yet_draws_no_figure_and_a_narrow_one_keeps_its_title(drawn, tmp_path):
    rows = _rows([1, 2], **{"guard/length": (16.0, 0.0), "guard/eos_rate": (0.0, 0.0)})  # measures, no signal
    title = "Over-optimisation guard: signals (dashed: threshold; red: warnings)"
    assert plots.guard_signals(rows, GUARD_SIGNAL_PANELS, tmp_path / "signals.png", title) is None
    assert not (tmp_path / "signals.png").exists()
    one = _rows([1, 2, 3], **{"guard/eos_drop": (0.0, 0.1)})  # one panel: the narrowest figure
    plots.guard_signals(one, GUARD_SIGNAL_PANELS, tmp_path / "one.png", title, {"eos_drop": 0.25},
                        [{"step": 3, "signal": "eos_drop"}], marks={"best guard step": 2})
    check_figure(drawn[-1])


def test_reward_model_calibration(drawn, tmp_path):
    calibration = [{"lo": 0.5 + 0.1 * b, "hi": 0.6 + 0.1 * b, "n": 6 + b, "confidence": 0.55 + 0.1 * b,
                    "accuracy": 0.4 + 0.12 * b} for b in range(5)]
    report = {"n": 30, "accuracy": 0.5, "ece": 0.2, "calibration": calibration,
              "by_prompt_length": [{"lo": 3, "hi": 9, "n": 15, "accuracy": 0.47}, {"lo": 10, "hi": 30, "n": 15,
                                                                                    "accuracy": 0.53}]}
    plots.reward_model_calibration(report, tmp_path / "rm.png")
    check_figure(drawn[-1])


def test_every_figure_of_the_quick_demo_report(drawn, tmp_path):
    runs = {"sft": Run("sft", tmp_path / "sft", _rows([8]), None, None, "sft"),
            "rm": Run("rm", tmp_path / "rm", _rows([3], accuracy=(0.6, 0.0), margin=(0.1, 0.0)), None, None, "rm")}
    for name in ("ppo-kl0.02", "ppo-kl0.05", "ppo-kl0.15", "rloo", "grpo"):
        runs[name] = Run(name, tmp_path / name, _rows([1, 2], **POLICY), None, None, "policy")
    for name in ("dpo-beta0.05", "online_dpo"):
        runs[name] = Run(name, tmp_path / name, _rows([1, 2], reward_accuracy=(0.5, 0.1), reward_margin=(0.0, 0.1),
                                                      reward_chosen=(0.0, 0.1), reward_rejected=(0.0, -0.1),
                                                      logp_chosen=(-50.0, -1.0)), None, None, "dpo")
    method = {"kl_to_ref": 0.0469, "gold_reward": 0.04, "dir": "rloo"}
    summary = {"sft": {"kl_to_ref": 0.0, "gold_reward": 0.26, "dir": "sft"}, "rloo": method,
               "ppo": {"kl_to_ref": 0.0442, "gold_reward": 0.189, "dir": "ppo-kl0.05"},
               "grpo": {"kl_to_ref": 0.0146, "gold_reward": 0.196, "dir": "grpo"},
               "frontier": [{"method": "ppo", "kl_strength": 0.05, "kl_to_ref": 0.0442, "gold_reward": 0.189,
                             "dir": "ppo-kl0.05"}]}
    gold = {"n": 30, "accuracy": 0.5, "ece": 0.1, "calibration": [{"lo": 0.5, "hi": 0.6, "n": 30, "confidence": 0.52,
                                                                  "accuracy": 0.5}], "by_prompt_length": []}
    figures = draw_figures(tmp_path, summary, runs, gold)
    assert {"frontier", "proxy_vs_gold", "rm_calibration", "curves-sft", "curves-rm", "curves-policy",
            "curves-policy-diagnostics", "curves-dpo"} <= set(figures)
    assert len(drawn) == len(figures)
    for fig in drawn:
        check_figure(fig)


def test_every_figure_of_a_short_stage_report(drawn, tmp_path):
    """A two-step PPO run with a guard window longer than the run: measures, no signal."""
    run = tmp_path / "ppo"
    run.mkdir()
    rows = _rows([1, 2], **POLICY, **{"guard/length": (16.0, 0.0), "guard/eos_rate": (0.0, 0.0),
                                     "guard/distinct_2": (0.9, 0.01), "guard/repetition": (0.0, 0.0)})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    summary = {"stage": "ppo", "steps": 2, "kl": -0.033, "kl_estimator": "k1",
               "guard": {"enabled": True, "window": 10, "patience": 3, "thresholds": {"eos_drop": 0.25},
                         "warnings": [], "best_step": None, "best_score": None}}
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    page = write_run_report(run).read_text(encoding="utf-8")
    assert not (run / "figures" / "guard-signals.png").exists() and "No signal yet" in page
    assert (run / "figures" / "guard-measures.png").exists() and (run / "figures" / "proxy-vs-gold.png").exists()
    assert len(drawn) == 4  # curves (2), proxy vs gold, guard measures
    for fig in drawn:
        check_figure(fig)
