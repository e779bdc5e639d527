"""The decode workers behind `rlhf serve`: one background thread per model.

`ContinuousEngine` batches on the fly: between two decode steps it admits the sequences that
arrived (prefilled together) and retires those that finished, so throughput grows with the
number of concurrent requests (rlhf.rollout.continuous). `SerialEngine` is the baseline the
bench compares against: one request at a time through `transformers`' own `generate`.

A request's sequences report to the asyncio side through `Sequence.emit`, which puts
(text delta, finish reason or None) events on the request's queue thread-safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import torch

from ..rollout.continuous import DecodeBatch, sample_rows

log = logging.getLogger("rlhf.serve")


@dataclass(eq=False)
class Sequence:
    """One choice of one request: its prompt, settings, and the text generated so far."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    generator: torch.Generator | None
    events: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    index: int = 0  # the choice's index in the answer
    tokenizer: object = None
    stop_ids: frozenset = frozenset()
    ids: list[int] = field(default_factory=list)
    text: str = ""  # decoded so far, cut at a stop string once one appears
    sent: int = 0  # characters of `text` already emitted
    generated: int = 0  # tokens sampled, a stop token included (usage counts)
    finish: str | None = None  # "stop" | "length" once done; "error" when generation failed
    error: str = ""
    cancelled: bool = False  # the client went away
    sink: list | None = None  # where `_emit` collects events (see `push`)
    on_done: object = None  # called with the sequence when it finishes (rlhf.serve.metrics), from the decode thread
    submitted_at: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None  # when its first token was sampled

    def push(self, token: int, sink: list | None = None) -> bool:
        """Take one sampled token; emit what text is safe to show. True when the sequence is done.
        With a `sink`, events are collected there for `deliver` (one wake-up of the event loop
        per decode step, not one per sequence)."""
        self.sink = sink
        if self.generated == 0:
            self.first_token_at = time.perf_counter()
        self.generated += 1
        if token in self.stop_ids:
            self.finish = "stop"
        else:
            self.ids.append(token)
            self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            hits = [i for i in (self.text.find(s) for s in self.stop) if i >= 0]
            if hits:
                self.text, self.finish = self.text[: min(hits)], "stop"
            elif len(self.ids) >= self.max_tokens:
                self.finish = "length"
        if self.finish is not None:
            self._emit(self.text[self.sent :], self.finish)
            if self.on_done is not None:
                self.on_done(self)
            return True
        # hold back a possible start of a stop string and an unfinished UTF-8 character
        hold = max((len(s) - 1 for s in self.stop), default=0)
        safe = len(self.text) - hold
        while safe > self.sent and self.text[safe - 1] == "\ufffd":
            safe -= 1
        if safe > self.sent:
            self._emit(self.text[self.sent : safe], None)
        return self.cancelled

    def fail(self, message: str) -> None:
        self.finish, self.error, self.sink = "error", message, None
        self._emit(message, "error")

    def _emit(self, delta: str, finish: str | None) -> None:
        self.sent += len(delta) if finish != "error" else 0
        event = (self.index, delta, finish)
        if self.sink is not None:
            self.sink.append((self.loop, self.events, event))
        else:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)


def deliver(sink: list) -> None:
    """Hand the events collected in `sink` to their queues: one call per event loop."""
    by_loop: dict = {}
    for loop, events, event in sink:
        by_loop.setdefault(loop, []).append((events, event))
    for loop, items in by_loop.items():
        loop.call_soon_threadsafe(_put_all, items)


def _put_all(items: list) -> None:
    for events, event in items:
        events.put_nowait(event)


class _Worker:
    """A daemon thread that drains `self.inbox` and runs `self._loop`."""

    def __init__(self, model, tokenizer, autocast=None):
        self.model, self.tokenizer = model, tokenizer
        self.autocast = autocast or contextlib.nullcontext
        self.inbox: queue.Queue[list[Sequence] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"rlhf-serve-{type(self).__name__}")
        self.thread.start()

    def submit(self, seqs: list[Sequence]) -> None:
        self.inbox.put(seqs)

    def close(self) -> None:
        self.inbox.put(None)
        self.thread.join(timeout=10)

    def _run(self) -> None:
        try:
            with torch.inference_mode(), self.autocast():
                self._loop()
        except Exception:  # a dead worker would hang every later request: log it loudly
            log.exception("decode worker stopped")
            raise


class ContinuousEngine(_Worker):
    """Continuous batching over one `DecodeBatch`; at most `max_batch` rows decode together."""

    def __init__(self, model, tokenizer, max_batch: int = 64, autocast=None):
        self.max_batch = max_batch
        self.running = 0  # sequences decoding (read by /metrics)
        self.queued = 0  # sequences taken from the inbox, waiting for a slot
        super().__init__(model, tokenizer, autocast)

    @property
    def waiting(self) -> int:
        """Sequences submitted and not yet decoding (the inbox holds lists of them: counted as one each)."""
        return self.queued + self.inbox.qsize()

    def _loop(self) -> None:
        batch = DecodeBatch(self.model, self.tokenizer.pad_token_id)
        rows: list[Sequence] = []
        waiting: list[Sequence] = []
        while True:
            block = not rows and not waiting
            try:
                while True:
                    item = self.inbox.get(block=block)
                    if item is None:
                        return
                    waiting.extend(item)
                    block = False
            except queue.Empty:
                pass
            if waiting and len(rows) < self.max_batch:
                new, waiting = waiting[: self.max_batch - len(rows)], waiting[self.max_batch - len(rows) :]
                try:
                    logits = batch.admit([s.prompt_ids for s in new])
                except Exception as err:  # e.g. out of memory: fail these requests, keep serving
                    log.exception("prefill failed")
                    for s in new:
                        s.fail(f"generation failed: {err}")
                    continue
                start = len(rows)
                rows.extend(new)
                self._take(batch, rows, logits, range(start, len(rows)))
            self.running, self.queued = len(rows), len(waiting)
            if rows:  # one decode step for every row, the just-admitted ones included
                try:
                    logits = batch.step()
                except Exception as err:  # fail the running requests, start over with an empty batch
                    log.exception("decode step failed")
                    for s in rows:
                        s.fail(f"generation failed: {err}")
                    batch, rows = DecodeBatch(self.model, self.tokenizer.pad_token_id), []
                    continue
                self._take(batch, rows, logits, range(len(rows)))

    def _take(self, batch: DecodeBatch, rows: list[Sequence], logits: torch.Tensor, which: range) -> None:
        """Sample for rows `which` from their logits (len(which), V), push, retire the finished."""
        seqs = [rows[i] for i in which]
        temperature = torch.tensor([s.temperature for s in seqs], device=logits.device)
        top_p = torch.tensor([s.top_p for s in seqs], device=logits.device)
        tokens = sample_rows(logits, temperature, top_p, [s.generator for s in seqs])
        batch.set_pending(slice(which.start, which.stop), tokens)
        sink: list = []
        done = [i for i, s, t in zip(which, seqs, tokens.tolist()) if s.push(t, sink)]
        if done:
            batch.retire(done)
            for i in sorted(done, reverse=True):
                del rows[i]
        self.running = len(rows)  # before the events go out: a client that got its answer sees it retired
        deliver(sink)


class _Streamer:
    """transformers' streamer protocol: `put` gets the prompt first, then each new token."""

    def __init__(self, seq: Sequence):
        self.seq, self.prompt_seen = seq, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        if self.seq.finish is None:
            self.seq.push(int(value.reshape(-1)[0]))

    def end(self) -> None:
        if self.seq.finish is None:  # generate stopped on its own limit
            self.seq.finish = "length"
            self.seq._emit(self.seq.text[self.seq.sent :], "length")


class SerialEngine(_Worker):
    """The baseline: each sequence alone through `model.generate`, one after another."""

    def _loop(self) -> None:
        from transformers import StoppingCriteria, StoppingCriteriaList

        class Finished(StoppingCriteria):
            def __init__(self, seq):
                self.seq = seq

            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), self.seq.finish is not None or self.seq.cancelled,
                                  dtype=torch.bool)

        while True:
            item = self.inbox.get()
            if item is None:
                return
            for seq in item:
                ids = torch.tensor([seq.prompt_ids], device=self.model.device)
                sampling = ({"do_sample": False} if seq.temperature == 0 else
                            {"do_sample": True, "temperature": seq.temperature, "top_p": seq.top_p, "top_k": 0})
                if seq.generator is not None:
                    torch.manual_seed(seq.generator.initial_seed())
                try:
                    self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=seq.max_tokens,
                                        pad_token_id=self.tokenizer.pad_token_id, eos_token_id=sorted(seq.stop_ids),
                                        streamer=_Streamer(seq), stopping_criteria=StoppingCriteriaList([Finished(seq)]),
                                        **sampling)
                except Exception as err:
                    log.exception("generate failed")
                    seq.fail(f"generation failed: {err}")


ENGINES = {"continuous": ContinuousEngine, "serial": SerialEngine}
