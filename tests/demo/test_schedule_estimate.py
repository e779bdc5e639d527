"""The demo's time-left estimate: planned seconds per step kind, scaled by this machine's speed so
far, with steps side by side sharing the cores and running steps counting only what is left."""

from __future__ import annotations

import pytest

from rlhf.runtime.steps import SHARED_CORE_SLOWDOWN, Progress, Step


def fake_step(name: str, kind: str) -> Step:
    return Step(name, lambda: None, kind=kind, alone=name == "report")  # the report runs alone, with every core


SECONDS = {"sft": 10.0, "rm": 100.0, "dpo": 60.0, "report": 4.0}


def test_steps_side_by_side_share_the_cores_and_a_running_step_counts_what_is_left(capsys):
    steps = [fake_step("sft", "sft"), fake_step("rm", "rm"), fake_step("dpo", "dpo"), fake_step("report", "report")]
    progress = Progress(steps, SECONDS, workers=2)
    progress.begin(steps[0], steps)  # headers count steps in the order they start: sft, then rm
    progress.begin(steps[1], steps[1:], running=1)
    capsys.readouterr()
    # rm has run for 50 s beside dpo: its own wall time sharing a core is 100 x 1.7 = 170 s, 120 s of it left
    progress.begin(steps[2], [steps[1], steps[2], steps[3]], running=2, running_for={"rm": 50.0})
    expected = (100 * SHARED_CORE_SLOWDOWN - 50) / 2 + 60 * SHARED_CORE_SLOWDOWN / 2 + 4.0
    assert SHARED_CORE_SLOWDOWN == 1.7 and expected == pytest.approx(60 + 51 + 4)  # 115 s: 1 min 55 s
    assert progress.estimates[-1]["estimated_left_s"] == pytest.approx(expected, abs=0.1)
    assert "[3/4] dpo  (0:00 elapsed, about 1:55 left, 2 side by side)" in capsys.readouterr().out
    # a step that ran past its plan counts nothing, never a negative time
    progress.begin(steps[3], [steps[1], steps[3]], running=1, running_for={"rm": 1000.0})
    assert progress.estimates[-1]["estimated_left_s"] == pytest.approx(4.0, abs=0.1)
    assert "[4/4] report  (0:00 elapsed, about 0:04 left)" in capsys.readouterr().out


def test_the_estimate_scales_with_this_machines_speed():
    steps = [fake_step("sft", "sft"), fake_step("report", "report")]
    progress = Progress(steps, SECONDS, workers=1)
    progress.end(steps[0], 20.0)  # sft took twice its plan: the machine is half as fast
    progress.begin(steps[1], [steps[1]])
    assert progress.estimates[-1]["estimated_left_s"] == pytest.approx(8.0, abs=0.1)  # the report's 4 s, twice
