"""Running the demo's steps: one after another, or side by side where they do not depend on
each other.

On a CPU a 5M-parameter model decodes on two cores barely faster than on one: its matrix
products are small, and a second thread adds 10-30% (a batch of 64 on a 2-core EPYC: 1,830
tokens/s with one thread, 2,040 with two); training scales better. Running independent steps
side by side, one core each, made the full demo about a fifth faster there. So after the labels exist, the steps that need only earlier
results (the reward model, the DPO runs, online DPO, then PPO, RLOO and GRPO once the reward
model is there, and the evaluations) run in `workers` processes, each with cores / workers
threads, while the steps everything depends on (data, SFT, labels) and the report run alone
with every core.

A worker writes what a step prints into `logs/STEP.log` of the demo directory; the progress
display prints one line as each step starts and ends. A step that fails stops the demo with
the end of its log; `--resume` continues from the steps that finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

from ..runtime.files import atomic_write_text

# Steps every later step needs, and the report, which reads everything: run alone, all cores.
SOLO = ("data", "sft", "labels", "report")
# How much slower a step runs with one core of two than alone with both: measured on the full
# demo's steps on a 2-core EPYC, 1.45-2.1x (RLOO 1.54, GRPO 1.45, the reward model 2.07): the
# training steps scale well on two threads, decoding does not. Used only for the time-left estimate.
SHARED_CORE_SLOWDOWN = 1.7


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


class Progress:
    """Prints which steps run, the time spent and an estimate of the time left.

    The plan's seconds per step were measured on one machine, one step at a time; once a few
    seconds of steps have run here, the estimate is scaled by how fast this machine has been on
    them, and steps that will share the cores count `SHARED_CORE_SLOWDOWN / workers` of their
    time. Every estimate is kept so the summary can show how good they were."""

    def __init__(self, steps: list, seconds: dict, workers: int = 1):
        self.steps, self.seconds, self.workers = steps, seconds, workers
        self.start = time.perf_counter()
        self.expected_done = 0.0  # planned seconds of the steps measured in this process
        self.measured_done = 0.0  # their measured seconds, as if run alone
        self.estimates: list[dict] = []

    def _wall_left(self, steps, speed: float, running_for: dict[str, float]) -> float:
        """Wall seconds the `steps` still need: a step alone counts its own time, a step beside
        others its time with a shared core divided by the workers; a step already running
        `running_for[name]` seconds counts only what is left of it."""
        left = 0.0
        for s in steps:
            alone = s.name in SOLO or self.workers == 1
            own = self.seconds[s.kind] * speed * (1.0 if alone else SHARED_CORE_SLOWDOWN)
            own = max(0.0, own - running_for.get(s.name, 0.0))
            left += own if alone else own / self.workers
        return left

    def begin(self, step, remaining: list, running: int = 1, running_for: dict[str, float] | None = None) -> None:
        elapsed = time.perf_counter() - self.start
        speed = self.measured_done / self.expected_done if self.expected_done >= 3 else 1.0
        left = self._wall_left(remaining, speed, running_for or {})
        self.estimates.append({"step": step.name, "elapsed_s": round(elapsed, 1), "estimated_left_s": round(left, 1)})
        index = self.steps.index(step)
        side_by_side = f", {running} side by side" if running > 1 else ""
        print(f"\n=== rlhf demo [{index + 1}/{len(self.steps)}] {step.title}  "
              f"({_clock(elapsed)} elapsed, about {_clock(left)} left{side_by_side})", flush=True)

    def end(self, step, seconds: float, shared: bool = False) -> None:
        self.expected_done += self.seconds[step.kind]
        self.measured_done += seconds / (SHARED_CORE_SLOWDOWN if shared else 1.0)

    def accuracy(self) -> list[dict]:
        """Each estimate beside the time that was really left, and the relative error."""
        total = time.perf_counter() - self.start
        return [{**e, "actual_left_s": round(total - e["elapsed_s"], 1),
                 "error": round(e["estimated_left_s"] / max(total - e["elapsed_s"], 1e-9) - 1, 3)} for e in self.estimates]


def default_workers(requested: int) -> int:
    """`requested` (>= 1), or with 0 two workers where the machine has at least two cores."""
    if requested:
        return requested
    return 2 if (os.cpu_count() or 1) >= 2 else 1


class Timings:
    """Seconds per finished step, kept in `timings.json` so that --resume skips them."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        self.seconds: dict[str, float] = json.loads(path.read_text(encoding="utf-8")) if resume and path.exists() else {}

    def record(self, name: str, seconds: float) -> None:
        self.seconds[name] = seconds
        atomic_write_text(self.path, json.dumps(self.seconds, indent=2) + "\n")


def run_steps(make_demo, cfg, steps: list, progress: Progress, timings: Timings, workers: int) -> None:
    """Every step of `steps` not yet in `timings` (the report always), in dependency order.
    `make_demo(cfg)` builds the demo again in a worker process, whose steps carry the same names."""
    todo = [s for s in steps if s.name not in timings.seconds or s.name == "report"]
    if workers <= 1:
        for step in todo:
            _run_here(step, todo[todo.index(step):], progress, timings)
        return
    head = [s for s in todo if s.name in SOLO and s.name != "report"]
    middle = [s for s in todo if s.name not in SOLO]
    for step in head:
        _run_here(step, todo[todo.index(step):], progress, timings)
    if middle:
        _run_side_by_side(make_demo, cfg, middle, [s for s in todo if s.name == "report"], progress, timings,
                          workers, Path(cfg.out) / "logs")
    for step in todo:
        if step.name == "report":
            _run_here(step, [step], progress, timings)


def _run_here(step, remaining: list, progress: Progress, timings: Timings) -> None:
    progress.begin(step, remaining)
    started = time.perf_counter()
    step.action()
    seconds = time.perf_counter() - started
    timings.record(step.name, seconds)
    progress.end(step, seconds)


def _run_side_by_side(make_demo, cfg, steps: list, tail: list, progress: Progress, timings: Timings, workers: int,
                      logs: Path) -> None:
    logs.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // workers)
    pending, running, done = list(steps), {}, set(timings.seconds)
    context = get_context("spawn")  # a fresh interpreter: no torch thread pool or locks inherited
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                             initargs=(threads,)) as pool:
        while pending or running:
            ready = [s for s in pending if all(d in done for d in s.after)]
            for step in ready[: workers - len(running)]:
                pending.remove(step)
                log = logs / f"{step.name}.log"
                running[pool.submit(_run_in_worker, make_demo, cfg, step.name, str(log))] = (step, time.perf_counter(), log)
                now = time.perf_counter()
                progress.begin(step, pending + [s for s, _, _ in running.values()] + tail, len(running),
                               {s.name: now - started for s, started, _ in running.values()})
            if not running:
                missing = {d for s in pending for d in s.after} - done
                raise RuntimeError(f"demo steps {[s.name for s in pending]} wait for {sorted(missing)}, which never ran")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                step, started, log = running.pop(future)
                try:
                    future.result()
                except BaseException as err:
                    tail_text = log.read_text(encoding="utf-8", errors="replace")[-3000:] if log.exists() else ""
                    raise RuntimeError(f"demo step {step.name} failed ({err}); the end of {log}:\n{tail_text}") from err
                seconds = time.perf_counter() - started
                timings.record(step.name, seconds)
                progress.end(step, seconds, shared=True)
                done.add(step.name)
                print(f"    {step.name} done in {_clock(seconds)} (log: {log})", flush=True)


def _start_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_in_worker(make_demo, cfg, name: str, log: str) -> None:
    """Run step `name` of `make_demo(cfg)` (the demo's class) in this worker process, its output into `log`."""
    if not cfg.progress:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    step = next(s for s in make_demo(cfg).steps() if s.name == name)
    with open(log, "w", encoding="utf-8") as sink, _redirect_output(sink):
        step.action()


@contextlib.contextmanager
def _redirect_output(sink):
    """stdout and stderr of this process (Python and native code alike) into `sink`."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(sink.fileno(), 1)
    os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
