"""The demo's time-left estimate: planned seconds per step kind, scaled by this machine's speed so
far, with steps side by side sharing the cores and running steps counting only what is left."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from rlhf.demo.schedule import SHARED_CORE_SLOWDOWN, Progress


@dataclass(frozen=True)
class FakeStep:
    name: str
    kind: str
    title: str = ""


SECONDS = {"sft": 10.0, "rm": 100.0, "dpo": 60.0, "report": 4.0}


def test_steps_side_by_side_share_the_cores_and_a_running_step_counts_what_is_left(capsys):
    steps = [FakeStep("sft", "sft"), FakeStep("rm", "rm"), FakeStep("dpo", "dpo"), FakeStep("report", "report")]
    progress = Progress(steps, SECONDS, workers=2)
    # rm has run for 50 s beside dpo: its own wall time sharing a core is 100 x 1.7 = 170 s, 120 s of it left
    progress.begin(steps[2], [steps[1], steps[2], steps[3]], running=2, running_for={"rm": 50.0})
    expected = (100 * SHARED_CORE_SLOWDOWN - 50) / 2 + 60 * SHARED_CORE_SLOWDOWN / 2 + 4.0
    assert progress.estimates[-1]["estimated_left_s"] == pytest.approx(expected, abs=0.1)
    # a step that ran past its plan counts nothing, never a negative time
    progress.begin(steps[3], [steps[1], steps[3]], running=1, running_for={"rm": 1000.0})
    assert progress.estimates[-1]["estimated_left_s"] == pytest.approx(4.0, abs=0.1)
    assert "about" in capsys.readouterr().out


def test_the_estimate_scales_with_this_machines_speed():
    steps = [FakeStep("sft", "sft"), FakeStep("report", "report")]
    progress = Progress(steps, SECONDS, workers=1)
    progress.end(steps[0], 20.0)  # sft took twice its plan: the machine is half as fast
    progress.begin(steps[1], [steps[1]])
    assert progress.estimates[-1]["estimated_left_s"] == pytest.approx(8.0, abs=0.1)
