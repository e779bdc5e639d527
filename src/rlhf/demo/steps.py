"""What both embedded demos do around their steps: refuse to write into another demo's directory
unless resuming, then run the steps on the one pipeline runner (rlhf.runtime.steps)."""

from __future__ import annotations

from collections.abc import Callable

from ..runtime.steps import Runner, Step, default_workers


def run_demo(demo, label: str, rebuild: Callable[[], list[Step]]) -> Runner:
    """Run `demo.steps()` in `demo.out`; `demo.timings` and `demo.finished_before` become the
    runner's (its report step reads them). `rebuild` makes the same steps in a worker process."""
    cfg, out = demo.cfg, demo.out
    if out.exists() and any(out.iterdir()) and not cfg.resume:
        raise FileExistsError(f"{out} is not empty: pass --resume to continue that demo, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(out, label=label, seconds=demo.plan.seconds, resume=cfg.resume,
                    workers=default_workers(cfg.workers))
    demo.timings = runner.timings
    demo.finished_before = runner.finished_before - {"report"}  # the report runs again on every run
    runner.run(demo.steps(), rebuild=rebuild)
    return runner
