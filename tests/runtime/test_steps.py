"""The one pipeline runner (rlhf.runtime.steps) on tiny Python functions: dependencies, steps side
by side in worker processes, a failing step that stops the run and names its log, resume."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest

from rlhf.runtime.steps import Progress, Runner, Step, StepFailed

SECONDS = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}


def _mark(out: str, name: str, fail: bool = False) -> None:
    """A step: prints, then appends its name to OUT/order.txt (or fails after printing)."""
    print(f"step {name} says hello")
    if fail:
        raise ValueError(f"{name} cannot go on")
    with open(Path(out) / "order.txt", "a", encoding="utf-8") as f:
        f.write(name + "\n")


def diamond(out: str, fail: str = "") -> list[Step]:
    """a -> (b, c) -> d: b and c depend only on a, d reads both."""
    def step(name, after=(), **kw):
        return Step(name, functools.partial(_mark, out, name, name == fail), after=after, **kw)
    return [step("a", alone=True), step("b", ("a",)), step("c", ("a",)), step("d", ("b", "c"), alone=True)]


def order(out: Path) -> list[str]:
    return (out / "order.txt").read_text().split() if (out / "order.txt").exists() else []


def test_dependencies_run_in_order_and_resume_skips_finished_steps(tmp_path, capfd):
    runner = Runner(tmp_path, label="test", seconds=SECONDS)
    runner.run(diamond(str(tmp_path)))
    assert order(tmp_path) == ["a", "b", "c", "d"]
    assert set(json.loads((tmp_path / "timings.json").read_text())) == {"a", "b", "c", "d"}
    assert (tmp_path / "logs" / "b.log").read_text() == "step b says hello\n"  # the log, and the console too
    out = capfd.readouterr().out
    assert "=== test [1/4] a  (0:00 elapsed, about 0:04 left)" in out  # 1 planned second a step, one at a time

    # a failure stops the run before the steps that need it, names its log, and keeps its type
    (tmp_path / "order.txt").unlink()
    (tmp_path / "timings.json").write_text(json.dumps({"a": 1.0}))
    runner = Runner(tmp_path, label="test", seconds=SECONDS, resume=True)
    with pytest.raises(ValueError, match="c cannot go on") as err:
        runner.run(diamond(str(tmp_path), fail="c"))
    assert str(tmp_path / "logs" / "c.log") in " ".join(err.value.__notes__)
    assert str(tmp_path / "logs" / "c.log") in capfd.readouterr().err
    assert order(tmp_path) == ["b"]  # a was finished: not rerun; d never started

    # resume: only what did not finish runs, and an `always` step runs again
    steps = diamond(str(tmp_path))
    steps[0].always = True
    Runner(tmp_path, label="test", seconds=SECONDS, resume=True).run(steps)
    assert order(tmp_path) == ["b", "a", "c", "d"]


def test_independent_steps_run_side_by_side_and_a_failure_shows_the_end_of_its_log(tmp_path, capfd):
    runner = Runner(tmp_path, label="test", seconds=SECONDS, workers=2)
    runner.run(diamond(str(tmp_path)), rebuild=functools.partial(diamond, str(tmp_path)))
    assert order(tmp_path)[0] == "a" and set(order(tmp_path)[1:3]) == {"b", "c"} and order(tmp_path)[3] == "d"
    assert "2 side by side" in capfd.readouterr().out
    assert (tmp_path / "logs" / "c.log").read_text() == "step c says hello\n"  # a worker's output: its log only

    other = tmp_path / "failing"
    other.mkdir()
    with pytest.raises(StepFailed, match=r"step b failed[\s\S]*step b says hello"):
        Runner(other, label="test", seconds=SECONDS, workers=2).run(
            diamond(str(other), fail="b"), rebuild=functools.partial(diamond, str(other), fail="b"))
    assert "d" not in order(other)


def test_a_step_that_waits_for_a_later_or_unknown_step_is_refused(tmp_path):
    steps = diamond(str(tmp_path))
    with pytest.raises(ValueError, match="step b .* not before it"):
        Runner(tmp_path, label="test", seconds=SECONDS).run([steps[1], steps[0]])
    assert order(tmp_path) == []


def test_step_headers_count_in_the_order_steps_start(capsys):
    """Issue 27 item 8: side by side, steps start out of the list's order, and the headers read
    [4/15], [8/15], [9/15], [5/15]; they count starts, after the steps an earlier run finished."""
    steps = diamond("unused")
    progress = Progress(steps, SECONDS, workers=2, label="test")
    for step in (steps[0], steps[2], steps[1], steps[3]):  # c starts before b
        progress.begin(step, [step])
    assert re.findall(r"\[(\d)/4\] (\w)", capsys.readouterr().out) == [("1", "a"), ("2", "c"), ("3", "b"), ("4", "d")]
    resumed = Progress(steps, SECONDS, workers=2, label="test", finished=1)  # a finished before
    for step in (steps[2], steps[1]):
        resumed.begin(step, [step])
    assert re.findall(r"\[(\d)/4\] (\w)", capsys.readouterr().out) == [("2", "c"), ("3", "b")]
