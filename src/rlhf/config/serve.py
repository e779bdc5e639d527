"""Config of `rlhf serve`: an OpenAI-compatible HTTP API on trained policies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import tyro

from .base import check_fields

ENGINES = ("continuous", "serial")  # rlhf.serve.engine.ENGINES


@dataclass(frozen=True)
class ServeConfig:
    """`rlhf serve --model DIR [--model DIR2 ...]`: /v1/models, /v1/chat/completions and
    /v1/completions (streaming, temperature, top_p, max_tokens, stop, n, seed, usage), with
    concurrent requests batched on the fly. A model is named by its directory's last part, or
    NAME=DIR names it NAME."""

    model: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()  # (required) model directories (Hugging Face format), each DIR or NAME=DIR; repeat --model for several
    db: str = ""  # feedback store (SQLite path or URL, e.g. feedback.db): serves the chat page at /chat and keeps its feedback under each person's name; people sign in by the link `rlhf label invite NAME --chat --db DB` prints; "" = no page
    monitor_scorer: str = ""  # with --db: a safety scorer (reward-model dir or module:function) scores every stored chat answer; the monitor shows the share flagged per version
    monitor_threshold: float = 0.0  # --monitor-scorer: an answer scoring below this is flagged (a reward model's score is normalised: standard deviations)
    project: str = "chat"  # the chat page's feedback goes to projects PROJECT-thumbs and PROJECT-pairs (`rlhf label export --project`)
    host: str = "127.0.0.1"  # interface to listen on; 0.0.0.0 exposes the server to the network (then an API key is required)
    api_key_env: str = ""  # environment variable holding the API key(s), comma-separated: /v1/ requests need `Authorization: Bearer KEY`; "" = no key
    allow_unauthenticated: bool = False  # serve a non-loopback --host without an API key (anyone who reaches the port may use it)
    port: int = 8000  # TCP port, as OpenAI-compatible servers take (rlhf label serve takes 8080)
    engine: Literal["continuous", "serial"] = "continuous"  # continuous: batch concurrent requests; serial: one at a time with transformers' generate (the baseline)
    max_batch: int = 64  # sequences decoded together at most per model (continuous engine)
    max_queue: int = 256  # sequences that may wait for a decode slot per model; a request beyond it gets 429 with Retry-After
    request_timeout: float = 600.0  # seconds a request may generate before it is stopped (504, or an error event in a stream); 0 = no limit
    drain_timeout: float = 30.0  # on SIGTERM / Ctrl-C: seconds to finish the requests in flight before exiting (new ones are refused)
    log_prompts: bool = False  # also write each request's messages (or prompt) into its rlhf.serve.access log line; off: no prompt text is ever logged
    max_tokens: int = 256  # default max_tokens of a request that sets none (always cut to the model's context)
    max_n: int = 16  # largest `n` (choices per request) accepted
    max_body_mb: float = 2.0  # requests with a larger body get 413
    precision: Literal["fp32", "bf16"] = "fp32"  # weights and compute; bf16 is faster on CPUs with AMX
    threads: int = 0  # torch CPU threads for the models; 0 = torch's default (one per core). 1 is often faster on a busy machine
    trust_remote_code: bool = False  # allow model code from the model directory

    def __post_init__(self):
        checks = {"port": 0 <= self.port <= 65535, "max_batch": self.max_batch >= 1, "max_queue": self.max_queue >= 0,
                  "drain_timeout": self.drain_timeout >= 0, "request_timeout": self.request_timeout >= 0, "max_tokens": self.max_tokens >= 1,
                  "max_n": self.max_n >= 1, "project": bool(self.project.strip()), "threads": self.threads >= 0, "max_body_mb": self.max_body_mb > 0,
                  "model": all(m.strip() for m in self.model)}
        check_fields(self, checks)
        check_fields(self, {"monitor_scorer": not self.monitor_scorer or bool(self.db)},
                     "--monitor-scorer scores the answers the chat page stores: give --db as well")
