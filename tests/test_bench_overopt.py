"""bench/overopt.py: the moving average, where gold peaks and whether it falls, the guard's first
warning read back from a run directory, and the figure written."""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import overopt  # noqa: E402


def write_run(path: Path, gold: list[float], proxy: list[float], warning_step: int | None, summary: bool) -> Path:
    path.mkdir()
    rows = [{"step": i + 1, "reward": p, "gold": g, "kl": 0.5 * i, "eos_rate": 0.5,
             "guard/warnings": int(warning_step is not None and i + 1 >= warning_step)}
            for i, (g, p) in enumerate(zip(gold, proxy))]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if summary:
        warnings = [{"step": warning_step, "signal": "eos_drop"}] if warning_step else []
        (path / "summary.json").write_text(json.dumps({"guard": {"warnings": warnings}}))
    return path


def test_moving_average_is_trailing_and_starts_with_what_there_is():
    assert overopt.moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert overopt.moving_average([2.0], 5) == [2.0]


def test_gold_peak_and_fall_against_the_tolerance(tmp_path):
    rising_then_falling = write_run(tmp_path / "a", gold=[0.1, 0.5, 0.9, 0.9, 0.4, 0.2], proxy=[1, 2, 3, 4, 5, 6],
                                    warning_step=4, summary=True)
    run = overopt.read_run(rising_then_falling)
    assert run["first_warning"] == (4, "eos_drop")
    assert overopt.gold_peak(run, window=1) == 2  # the first of the two equal highs
    line = overopt.describe("a", run, window=1, tolerance=0.03)
    assert "after step 3 (by 0.700)" in line and "step 4 (eos_drop)" in line
    flat = overopt.read_run(write_run(tmp_path / "b", gold=[0.5, 0.6, 0.61, 0.6], proxy=[1, 2, 3, 4],
                                      warning_step=None, summary=False))
    assert flat["first_warning"] is None
    assert "no (end within 0.03" in overopt.describe("b", flat, window=1, tolerance=0.03)


def test_a_run_still_going_reads_its_warning_from_the_metrics_and_the_figure_is_written(tmp_path):
    run_dir = write_run(tmp_path / "c", gold=[0.2, 0.3, 0.2], proxy=[1, 2, 3], warning_step=2, summary=False)
    assert overopt.read_run(run_dir)["first_warning"] == (2, "guard")
    out = tmp_path / "fig.png"
    assert overopt.main([str(run_dir), "--out", str(out), "--window", "2"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_without_gold_is_refused(tmp_path):
    path = tmp_path / "d"
    path.mkdir()
    (path / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward": 1.0}) + "\n")
    with pytest.raises(SystemExit, match="--gold"):
        overopt.read_run(path)
