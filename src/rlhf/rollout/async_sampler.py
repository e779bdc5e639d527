"""Asynchronous RL (`rlhf ppo --async-staleness K`): a sampler in a worker process samples the
next steps' rollouts while the learner updates on this step's.

    sampler = AsyncSampler(local, build, staleness=1, prompts_of=schedule, steps=n)
    sampled = sampler.sample(policy, prompts, step)     # E_step, sampled by weights up to K updates old

Semantics of K (the staleness bound): the first call, at step t, submits steps t..t+K with the
current weights and waits for t; every later call at step t waits for t's result and submits
step t+K with the weights as they are then (version t: t updates done). So the rollout of step t
comes from the weights of step t - K (fewer in the first K steps), and while the learner
updates on it the worker is already sampling the steps after it. `async/staleness` (versions
behind) is in each step's figures; `summary()` gives its mean.

The worker is a spawned process (not a thread: decoding a small model is bound by per-token
Python overhead, which a thread would run under the learner's GIL). It builds its own policy
copy and inner sampler with `build()` (a picklable, module-level callable), so the samples are
drawn and scored exactly as the synchronous sampler draws them, each row's noise seeded by its
step. The learner's weights go to it through a torch.multiprocessing queue, i.e. shared
memory: packed into one flat tensor per dtype, sent with the first job after each update,
never through disk. The learner keeps its threads and the worker takes half as many
(`split_threads`).

A checkpoint (`state_dict`) waits for the jobs in flight and keeps their finished rollouts as
plain tensors, lists and strings (loadable with weights_only=True); a resumed run
(`load_state_dict`) takes them as ready, so it continues exactly as the uninterrupted run does.

Failure never hangs: a worker that raises hands its traceback back, one that dies is noticed
within a second, one that takes more than `timeout_s` for a step is killed; each ends the run
with a RuntimeError. The worker exits when its parent dies (SIGKILL included) and ignores
Ctrl-C (the learner closes it).
"""

from __future__ import annotations

import queue
import signal
import time
import traceback
from typing import Callable

import torch
import torch.multiprocessing as mp

from ..data.records import Message, Prompt, Rollout, prompt_as_json
from .experience import Sampled
from .sampler import Sampler

POLL_S = 0.5  # how often a waiting side checks that the other is still alive
START_TIMEOUT_S = 600.0  # spawning the worker imports torch and loads the models: slow on a loaded machine


class AsyncSampler(Sampler):
    """`build()`'s sampler, run `staleness` steps ahead in a worker process (module docstring).

    local: a sampler of this process, for what the learner itself asks of one (`k`, the scorer
    the evaluation judges with, the summary); it samples nothing. prompts_of: step -> the
    prompts of that step (this process's share), the schedule the trainer follows. steps: the
    run's step count (nothing is sampled past it). threads: (learner, worker) torch threads."""

    def __init__(self, local: Sampler, build: Callable[[], tuple], staleness: int,
                 prompts_of: Callable[[int], list[Prompt]], steps: int, timeout_s: float = 600.0,
                 threads: tuple[int, int] | None = None):
        if staleness < 1:
            raise ValueError(f"an asynchronous sampler runs at least 1 step ahead, not {staleness}")
        self.local, self.build, self.staleness = local, build, staleness
        self.k, self.scorer = local.k, local.scorer
        self.prompts_of, self.steps, self.timeout_s = prompts_of, steps, timeout_s
        self.threads = threads or split_threads(torch.get_num_threads())
        self.ready: dict[int, tuple[int, Sampled]] = {}  # step -> (weights version, its samples)
        self.in_flight: dict[int, int] = {}  # step -> weights version it was submitted with
        self.sent_version: int | None = None  # the weights the worker holds
        self.staleness_sum, self.sampled_steps = 0, 0
        self.process = self.jobs = self.results = None
        self.threads_before: int | None = None

    # ------------------------------------------------------------ the learner's side

    def sample(self, policy, prompts: list[Prompt], step: int) -> Sampled:
        if prompts != self.prompts_of(step):
            raise RuntimeError(f"step {step}: the trainer's prompts differ from the schedule the async sampler "
                               "samples ahead from")
        self.start()
        for ahead in range(step, max(step + 1, min(step + self.staleness + 1, self.steps))):
            if ahead not in self.ready and ahead not in self.in_flight:
                self.submit(policy, ahead, version=step)
        version, sampled = self.wait(step)
        staleness = step - version
        self.staleness_sum, self.sampled_steps = self.staleness_sum + staleness, self.sampled_steps + 1
        sampled.stats = {**sampled.stats, "async/staleness": float(staleness)}
        return sampled

    def start(self) -> None:
        """Spawn the worker (once) and wait until it has built its sampler."""
        if self.process is not None:
            return
        context = mp.get_context("spawn")
        self.jobs, self.results = context.Queue(), context.Queue()
        learner_threads, worker_threads = self.threads
        self.process = context.Process(target=worker_main, args=(self.build, worker_threads, self.jobs, self.results),
                                       name="rlhf-async-sampler", daemon=True)
        self.process.start()
        self.threads_before = torch.get_num_threads()
        torch.set_num_threads(learner_threads)
        message = self.receive("its start", max(self.timeout_s, START_TIMEOUT_S))
        if message[0] != "ready":
            raise RuntimeError(f"the async sampler's worker sent {message[0]!r} before it was ready")

    def submit(self, policy, step: int, version: int) -> None:
        """Queue step `step`, sampled with the weights of `version` (sent along when the worker
        does not hold them yet)."""
        weights = pack_weights(policy) if version != self.sent_version else None
        self.jobs.put(("job", step, version, weights, self.prompts_of(step)))
        self.sent_version = version
        self.in_flight[step] = version

    def wait(self, step: int) -> tuple[int, Sampled]:
        """(weights version, samples) of `step`, once the worker has sent them."""
        while step not in self.ready:
            if step not in self.in_flight:
                raise RuntimeError(f"step {step} was never submitted to the async sampler")
            message = self.receive(f"step {step}", self.timeout_s)
            if message[0] != "result":
                raise RuntimeError(f"the async sampler's worker sent {message[0]!r} instead of samples")
            _, done, version, sampled = message
            self.in_flight.pop(done, None)
            self.ready[done] = (version, sampled)
        return self.ready.pop(step)

    def receive(self, what: str, timeout_s: float) -> tuple:
        """The worker's next message; a RuntimeError (and the worker killed) when it raised, died,
        or sent nothing for `timeout_s` seconds."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                message = self.results.get(timeout=POLL_S)
            except queue.Empty:
                if not self.process.is_alive():
                    code = self.process.exitcode
                    self.close()
                    hint = ("; its stderr says why (a Python script that starts a run with an async sampler "
                            "needs the `if __name__ == \"__main__\":` guard: the worker is spawned and imports "
                            "the script)") if what == "its start" else ""
                    raise RuntimeError(f"the async sampler's worker died (exit code {code}) while waiting for "
                                       f"{what}{hint}") from None
                if time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"the async sampler's worker sent nothing for {timeout_s:.0f} s while "
                                       f"waiting for {what} (--dist-timeout): it hangs; killed it") from None
                continue
            if message[0] == "error":
                self.close()
                raise RuntimeError(f"the async sampler's worker failed ({what}):\n{message[1]}")
            return message

    def close(self) -> None:
        """Stop the worker (kill it if it is sampling, or does not stop within a few seconds)
        and give the learner its threads back. Safe to call twice."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.is_alive() and not self.in_flight:  # idle: it stops at once; busy: its samples are not wanted
            try:
                self.jobs.put(("stop",))
            except (OSError, ValueError):
                pass
            process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
        for q in (self.jobs, self.results):
            q.cancel_join_thread()
            q.close()
        self.in_flight.clear()
        if self.threads_before is not None:
            torch.set_num_threads(self.threads_before)

    def __enter__(self) -> "AsyncSampler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ checkpoints and summary

    def state_dict(self) -> dict:
        """The finished rollouts of every step submitted and not yet trained on (waiting for the
        ones in flight), as plain values, and the staleness so far."""
        for step in sorted(self.in_flight):
            self.ready[step] = self.wait(step)
        return {"ready": [{"step": step, "version": version, "sampled": sampled_state(sampled)}
                          for step, (version, sampled) in sorted(self.ready.items())],
                "staleness_sum": self.staleness_sum, "sampled_steps": self.sampled_steps}

    def load_state_dict(self, state: dict) -> None:
        """The saved rollouts become ready (a synchronous run's checkpoint holds none: the worker
        then starts afresh from the step resumed at)."""
        self.ready = {entry["step"]: (entry["version"], sampled_from_state(entry["sampled"]))
                      for entry in state.get("ready", [])}
        self.staleness_sum, self.sampled_steps = state.get("staleness_sum", 0), state.get("sampled_steps", 0)

    def summary(self) -> dict:
        return {**self.local.summary(), "async_staleness": self.staleness,
                "mean_staleness": self.staleness_sum / max(self.sampled_steps, 1),
                "async_threads": {"learner": self.threads[0], "sampler": self.threads[1]}}


def split_threads(total: int) -> tuple[int, int]:
    """(learner, worker) torch threads for a learner that had `total`: the learner keeps them all,
    the worker takes half (at least one), so the two overlap on the cores. Each side then has every
    core while the other waits (PPO's four update epochs and critic outlast the decode; a GRPO
    decode outlasts its one update), and they share the cores while both compute. Measured on 2
    cores (docs/async.md), against half each: PPO 0.97x the synchronous step instead of 1.43x,
    GRPO 0.92x instead of 0.97x; giving the worker every thread as well was slower (1.53x)."""
    return max(1, total), max(1, total // 2)


# ---------------------------------------------------------------- the worker's side


def worker_main(build: Callable[[], tuple], threads: int, jobs, results) -> None:
    """The worker process: build (policy, sampler), then sample each job with the weights it
    names, until told to stop or its parent is gone. Any exception goes back as its traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the learner ends us
    torch.set_num_threads(threads)
    parent = mp.parent_process()
    try:
        policy, sampler = build()
        policy.eval()
        results.put(("ready",))
        while True:
            try:
                message = jobs.get(timeout=POLL_S)
            except queue.Empty:
                if parent is not None and not parent.is_alive():
                    return
                continue
            if message[0] == "stop":
                return
            _, step, version, weights, prompts = message
            if weights is not None:
                load_packed_weights(policy, weights)
            sampled = sampler.sample(policy, prompts, step)
            if sampled.rollout.logprobs is None:
                raise RuntimeError("asynchronous RL needs the sampler's own log-probs (the behaviour policy's)")
            results.put(("result", step, version, sampled))
    except BaseException:  # noqa: BLE001  (anything: the learner must hear of it rather than wait)
        results.put(("error", traceback.format_exc()))


def pack_weights(policy) -> tuple[list, dict]:
    """The policy's state as ([(name, shape, dtype)], {dtype: one flat tensor}): a copy, one
    shared-memory block per dtype when sent through a torch.multiprocessing queue."""
    state = policy.state_dict()
    layout = [(name, tuple(t.shape), t.dtype) for name, t in state.items()]
    flats = {}
    for dtype in {t.dtype for t in state.values()}:
        flats[dtype] = torch.cat([t.detach().reshape(-1).cpu() for t in state.values() if t.dtype == dtype])
    return layout, flats


def load_packed_weights(policy, packed: tuple[list, dict]) -> None:
    """Copy `pack_weights`' output into `policy` (same architecture)."""
    layout, flats = packed
    offsets = dict.fromkeys(flats, 0)
    state = {}
    for name, shape, dtype in layout:
        n = int(torch.Size(shape).numel())
        state[name] = flats[dtype][offsets[dtype] : offsets[dtype] + n].view(shape)
        offsets[dtype] += n
    policy.load_state_dict(state)


# ---------------------------------------------------------------- rollouts as plain values


def sampled_state(s: Sampled) -> dict:
    """`s` as tensors, lists, strings and numbers only (torch.load(weights_only=True) reads it)."""
    if type(s.rollout) is not Rollout:
        raise ValueError(f"an async checkpoint keeps plain Rollouts, not {type(s.rollout).__name__}")
    r = s.rollout
    return {"rollout": [r.prompt_ids, r.prompt_mask, r.response_ids, r.response_mask, r.logprobs, r.ended],
            "prompts": [prompt_as_json(p) for p in s.prompts], "answers": list(s.answers),
            "responses": list(s.responses), "raw": s.raw, "score": s.score,
            "parts": {name: torch.as_tensor(part) for name, part in s.parts.items()},
            "stats": {name: float(v) for name, v in s.stats.items()}, "details": s.details}


def sampled_from_state(state: dict) -> Sampled:
    """The `Sampled` that `sampled_state` wrote."""
    def prompt(p):  # a conversation was written as a list of {"role", "content"}
        return p if isinstance(p, str) else tuple(Message(m["role"], m["content"]) for m in p)

    return Sampled(Rollout(*state["rollout"]), [prompt(p) for p in state["prompts"]], state["answers"],
                   state["responses"], state["raw"], state["score"], dict(state["parts"]), dict(state["stats"]),
                   state["details"])
