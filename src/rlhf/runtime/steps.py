"""One runner for every pipeline of steps (`rlhf demo`, `rlhf demo --task arithmetic`, `rlhf iterate`).

A pipeline is a list of `Step`s: a name, an action, the steps whose results it reads, and whether
it may run beside others. `Runner(out, ...).run(steps)` runs them in dependency order and gives
every pipeline the same five things:

- dependencies: a step starts once every step in its `after` has finished;
- side by side: with `workers` > 1, steps not marked `alone` run in that many worker processes,
  each with cores / workers threads, while `alone` steps (what everything needs, a report that
  reads everything) run by themselves in this process with every core;
- resume: each finished step's seconds go into `OUT/timings.json`; with `resume`, a step found
  there is not run again (unless it is marked `always`);
- progress: one line as each step starts, numbered in the order steps start, with the time spent
  and an estimate of the time left;
- logs: what a step prints goes into `OUT/logs/STEP.log` (and to the console too when it runs in
  this process); a step that fails stops the run, and the message names its log.

On a CPU a 5M-parameter model decodes on two cores barely faster than on one: its matrix products
are small, and a second thread adds 10-30% (a batch of 64 on a 2-core EPYC: 1,830 tokens/s with
one thread, 2,040 with two); training scales better. Running independent steps side by side, one
core each, made the full demo about a fifth faster there. Nothing here knows a stage.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from .files import atomic_write_text

# How much slower a step runs with one core of two than alone with both: measured on the full
# demo's steps on a 2-core EPYC, 1.45-2.1x (RLOO 1.54, GRPO 1.45, the reward model 2.07): the
# training steps scale well on two threads, decoding does not. Used only for the time-left estimate.
SHARED_CORE_SLOWDOWN = 1.7
LOG_TAIL_CHARS = 3000  # how much of a worker step's log a failure shows


@dataclass(eq=False)
class Step:
    name: str  # unique in its pipeline; the key of timings.json and the name of its log
    action: Callable[[], object]  # () -> anything; runs in this process or, rebuilt by name, in a worker
    after: tuple[str, ...] = ()  # steps whose results it reads
    title: str = ""  # what the progress line says (default: the name)
    kind: str = ""  # key of the planned seconds (default: the name)
    alone: bool = False  # never beside another step: in this process, with every core
    always: bool = False  # runs again on resume though it finished (a report that reads every step)
    dir: str = ""  # where its results are, relative to OUT (for the pipeline's summary; the runner ignores it)

    def __post_init__(self):
        self.title = self.title or self.name
        self.kind = self.kind or self.name


class StepFailed(RuntimeError):
    """A step run in a worker process failed; the message holds the end of its log."""


def clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def default_workers(requested: int) -> int:
    """`requested` (>= 1), or with 0 two workers where the machine has at least two cores."""
    if requested:
        return requested
    return 2 if (os.cpu_count() or 1) >= 2 else 1


class Progress:
    """Prints which steps run, the time spent and an estimate of the time left.

    The planned seconds per step kind were measured on one machine, one step at a time; once a few
    seconds of steps have run here, the estimate is scaled by how fast this machine has been on
    them, and steps that will share the cores count `SHARED_CORE_SLOWDOWN / workers` of their
    time. Every estimate is kept so a summary can show how good they were."""

    def __init__(self, steps: list[Step], seconds: dict, workers: int = 1, label: str = "rlhf", finished: int = 0):
        missing = sorted({s.kind for s in steps} - set(seconds))
        if missing:
            raise ValueError(f"no planned seconds for step kinds {missing}")
        self.steps, self.seconds, self.workers, self.label = steps, seconds, workers, label
        self.start = time.perf_counter()
        self.expected_done = 0.0  # planned seconds of the steps measured in this process
        self.measured_done = 0.0  # their measured seconds, as if run alone
        self.estimates: list[dict] = []
        # Headers count steps in the order they start ([5/15] is the fifth to start, after `finished`
        # done by an earlier run): side by side, steps start out of the list's order.
        self.started = finished

    def _wall_left(self, steps, speed: float, running_for: dict[str, float]) -> float:
        """Wall seconds the `steps` still need: a step alone counts its own time, a step beside
        others its time with a shared core divided by the workers; a step already running
        `running_for[name]` seconds counts only what is left of it."""
        left = 0.0
        for s in steps:
            alone = s.alone or self.workers == 1
            own = self.seconds[s.kind] * speed * (1.0 if alone else SHARED_CORE_SLOWDOWN)
            own = max(0.0, own - running_for.get(s.name, 0.0))
            left += own if alone else own / self.workers
        return left

    def begin(self, step: Step, remaining: list, running: int = 1, running_for: dict[str, float] | None = None) -> None:
        elapsed = time.perf_counter() - self.start
        speed = self.measured_done / self.expected_done if self.expected_done >= 3 else 1.0
        left = self._wall_left(remaining, speed, running_for or {})
        self.estimates.append({"step": step.name, "elapsed_s": round(elapsed, 1), "estimated_left_s": round(left, 1)})
        side_by_side = f", {running} side by side" if running > 1 else ""
        self.started += 1
        print(f"\n=== {self.label} [{self.started}/{len(self.steps)}] {step.title}  "
              f"({clock(elapsed)} elapsed, about {clock(left)} left{side_by_side})", flush=True)

    def end(self, step: Step, seconds: float, shared: bool = False) -> None:
        self.expected_done += self.seconds[step.kind]
        self.measured_done += seconds / (SHARED_CORE_SLOWDOWN if shared else 1.0)

    def accuracy(self) -> list[dict]:
        """Each estimate beside the time that was really left, and the relative error."""
        total = time.perf_counter() - self.start
        return [{**e, "actual_left_s": round(total - e["elapsed_s"], 1),
                 "error": round(e["estimated_left_s"] / max(total - e["elapsed_s"], 1e-9) - 1, 3)} for e in self.estimates]


class Runner:
    """Runs the steps of one pipeline in `out` (see the module's docstring).

    `timings` (step name -> seconds, steps of an earlier run included on resume) fills as steps
    finish, so a report step can read it; `finished_before` names the steps an earlier run finished."""

    def __init__(self, out: Path, *, label: str, seconds: dict, resume: bool = False, workers: int = 1):
        self.out, self.label, self.seconds, self.workers = Path(out), label, seconds, max(1, workers)
        self.timings_path, self.logs = self.out / "timings.json", self.out / "logs"
        earlier = resume and self.timings_path.exists()
        self.timings: dict[str, float] = json.loads(self.timings_path.read_text(encoding="utf-8")) if earlier else {}
        self.finished_before = set(self.timings)
        self.progress: Progress | None = None

    def run(self, steps: list[Step], rebuild: Callable[[], list[Step]] | None = None) -> None:
        """Every step not finished before (and every `always` one), each once its `after` have finished.
        `rebuild()` (picklable: a module-level function, or a functools.partial of one) makes the
        same steps again in a worker process; without it every step runs in this process."""
        names = [s.name for s in steps]
        for i, step in enumerate(steps):
            if step.name in names[:i] or not set(step.after) <= set(names[:i]):
                raise ValueError(f"{self.label}: step {step.name} repeats a name or waits for a step that is not "
                                 f"before it ({', '.join(step.after)}; before it: {', '.join(names[:i])})")
        todo = [s for s in steps if s.name not in self.timings or s.always]
        done = set(names) - {s.name for s in todo}
        workers = self.workers if rebuild is not None else 1
        self.progress = Progress(steps, self.seconds, workers, self.label, finished=len(done))
        self.logs.mkdir(parents=True, exist_ok=True)
        pending, running = list(todo), {}
        pool = None
        try:
            while pending or running:
                ready = [s for s in pending if all(d in done for d in s.after)]  # never empty with none running
                here = [s for s in ready if s.alone or workers == 1]
                if here and here[0] is ready[0]:  # a step that runs alone: once the running ones finish
                    if not running:
                        pending.remove(here[0])
                        self._run_here(here[0], pending)
                        done.add(here[0].name)
                        continue
                else:
                    if pool is None:
                        pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                                   initializer=_start_worker,
                                                   initargs=(max(1, (os.cpu_count() or 1) // workers),))
                    for step in [s for s in ready if not any(s is h for h in here)][: workers - len(running)]:
                        self._submit(pool, rebuild, step, pending, running)
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    done.add(self._collect(future, running))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    def _record(self, step: Step, seconds: float, shared: bool) -> None:
        self.timings[step.name] = seconds
        atomic_write_text(self.timings_path, json.dumps(self.timings, indent=2) + "\n")
        self.progress.end(step, seconds, shared)

    def _failed(self, step: Step, err: BaseException) -> str:
        log = self.logs / f"{step.name}.log"
        message = f"{self.label}: step {step.name} failed ({type(err).__name__}: {err}); its log: {log}"
        print(message, file=sys.stderr, flush=True)
        return message

    def _run_here(self, step: Step, remaining: list[Step]) -> None:
        self.progress.begin(step, [step, *remaining])
        started = time.perf_counter()
        try:
            with tee_output(self.logs / f"{step.name}.log"):
                step.action()
        except Exception as err:  # the error keeps its type (the CLI shows bad input as one line)
            err.add_note(self._failed(step, err))
            raise
        self._record(step, time.perf_counter() - started, shared=False)

    def _submit(self, pool, rebuild, step: Step, pending: list, running: dict) -> None:
        pending.remove(step)
        log = self.logs / f"{step.name}.log"
        running[pool.submit(_run_in_worker, rebuild, step.name, str(log))] = (step, time.perf_counter())
        now = time.perf_counter()
        self.progress.begin(step, pending + [s for s, _ in running.values()], len(running),
                            {s.name: now - started for s, started in running.values()})

    def _collect(self, future, running: dict) -> str:
        step, started = running.pop(future)
        log = self.logs / f"{step.name}.log"
        try:
            future.result()
        except BaseException as err:
            tail = log.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:] if log.exists() else ""
            raise StepFailed(f"{self._failed(step, err)}; its end:\n{tail}") from err
        seconds = time.perf_counter() - started
        self._record(step, seconds, shared=True)
        print(f"    {step.name} done in {clock(seconds)} (log: {log})", flush=True)
        return step.name


def _start_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_in_worker(rebuild: Callable[[], list[Step]], name: str, log: str) -> None:
    """Run step `name` of `rebuild()` in this worker process, its output into `log` alone."""
    step = next(s for s in rebuild() if s.name == name)
    with tee_output(Path(log), echo=False):
        step.action()


@contextlib.contextmanager
def tee_output(log: Path, echo: bool = True):
    """stdout and stderr of this process (Python and native code alike) into `log`, and with
    `echo` also to the file descriptors they went to before (a console, a pipe, pytest's capfd)."""
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log, "wb") as sink:
        lock, saved, copiers, ends = threading.Lock(), [], [], []
        for fd in (1, 2):
            saved.append(os.dup(fd))
            if echo:
                read, write = os.pipe()
                copier = threading.Thread(target=_copy, args=(read, saved[-1], sink, lock), daemon=True)
                copier.start()
                copiers.append(copier)
                ends.append(write)
                os.dup2(write, fd)
            else:
                os.dup2(sink.fileno(), fd)
        python = sys.stdout, sys.stderr  # Python's own writes go through the descriptors too
        sys.stdout, sys.stderr = (open(fd, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)
                                  for fd in (1, 2))
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = python
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
            for write in ends:
                os.close(write)  # the copier reads to the end of the pipe, then stops
            for copier in copiers:
                copier.join(timeout=10)
            for old in saved:
                os.close(old)


def _copy(read: int, echo: int, sink, lock: threading.Lock) -> None:
    """Everything from pipe `read` into file descriptor `echo` and into `sink`, until the pipe closes."""
    with os.fdopen(read, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            view = memoryview(chunk)
            while view:
                view = view[os.write(echo, view):]
            with lock:
                sink.write(chunk)
                sink.flush()
