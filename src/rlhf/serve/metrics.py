"""`GET /metrics` of `rlhf serve`, in Prometheus' text format (`prometheus-client`), named as
vLLM names its own where the meaning is the same, so existing dashboards read them:

    rlhf_requests_total{endpoint, status}        HTTP requests answered, by route and status code
    rlhf_num_requests_waiting{model}             sequences queued for a decode slot (the engine's inbox and queue)
    rlhf_num_requests_running{model}             sequences decoding now
    rlhf_generation_tokens_total{model}          tokens sampled (stop tokens included, as usage counts them)
    rlhf_time_to_first_token_seconds{model}      from submission to the first sampled token (histogram)
    rlhf_time_per_output_token_seconds{model}    the mean gap between a sequence's later tokens (histogram)
    rlhf_request_success_total{model, finish}    sequences finished, by reason (stop, length)
    rlhf_requests_cancelled_total{model, reason} sequences stopped early: disconnect (the client left, streaming or
                                                 not), timeout (--request-timeout), error (a sibling of n failed)

With a feedback store (`rlhf serve --db`), what users think of each model version, read from the
store at every scrape in one aggregate query (rlhf.feedback.monitor.feedback_counts), so they
count the feedback of every server that writes to the store and survive a restart:

    rlhf_feedback_thumbs{version, model}         live thumbs on the version's answers (a gauge: an undo lowers it)
    rlhf_feedback_thumbs_up_share{version, model} the share of them that are up (absent before the first thumb)
    rlhf_feedback_thumbs_up_low{version, model}  the lower end of that share's 95% Wilson interval
    rlhf_feedback_alert                          1 when the newest version is worse than the one before it
                                                 (rlhf.feedback.monitor.alert; also logged once when it turns on)

`version` is the model directory that wrote the answers, `model` its name here ("" for a version
this server does not serve).

Each app has its own registry (tests start several); the engines' queue figures are read when
scraped. A sequence reports its timings from the decode thread when it finishes (the client
library is thread-safe).
"""

from __future__ import annotations

import json
import logging
import re
import time
from contextvars import ContextVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (the /metrics route's media type)

ACCESS_LOG = logging.getLogger("rlhf.serve.access")
TTFT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0)
INVITE_IN_PATH = re.compile(r"^(/chat/join/)[^/]+")  # the chat page's invite links hold a sign-in token
TPOT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)


class ServeMetrics:
    """The server's figures (see the module docstring); `observe(seq)` when a sequence ends."""

    def __init__(self, models: dict):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("rlhf_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.tokens = Counter("rlhf_generation_tokens", "tokens sampled", ["model"], registry=r)
        self.finished = Counter("rlhf_request_success", "sequences finished", ["model", "finish"], registry=r)
        self.cancelled = Counter("rlhf_requests_cancelled", "sequences stopped before they finished",
                                 ["model", "reason"], registry=r)
        self.ttft = Histogram("rlhf_time_to_first_token_seconds", "submission to first sampled token", ["model"],
                              buckets=TTFT_BUCKETS, registry=r)
        self.tpot = Histogram("rlhf_time_per_output_token_seconds", "mean gap between later tokens", ["model"],
                              buckets=TPOT_BUCKETS, registry=r)
        waiting = Gauge("rlhf_num_requests_waiting", "sequences queued for a decode slot", ["model"], registry=r)
        running = Gauge("rlhf_num_requests_running", "sequences decoding now", ["model"], registry=r)
        for name, served in models.items():
            engine = served.engine
            waiting.labels(name).set_function(lambda engine=engine: getattr(engine, "waiting", 0))
            running.labels(name).set_function(lambda engine=engine: getattr(engine, "running", 0))

    def on_done(self, model: str):
        """The callback a sequence of `model` calls when it finishes (from the decode thread)."""

        def observe(seq) -> None:
            self.tokens.labels(model).inc(seq.generated)
            self.finished.labels(model, seq.finish).inc()
            if seq.first_token_at is not None:
                self.ttft.labels(model).observe(seq.first_token_at - seq.submitted_at)
                if seq.generated > 1:
                    self.tpot.labels(model).observe((time.perf_counter() - seq.first_token_at) / (seq.generated - 1))

        return observe

    def count_request(self, path: str, status: int) -> None:
        self.requests.labels(path, str(status)).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def watch_feedback(self, sessions, project: str, models: dict) -> None:
        """Add the feedback gauges of the module docstring, read from the store at each scrape."""
        self.registry.register(FeedbackGauges(sessions, project, {m.path: name for name, m in models.items()}))


class FeedbackGauges:
    """A collector: per model version, thumbs and thumbs-up share from the feedback store, and the alert."""

    def __init__(self, sessions, project: str, names: dict[str, str], min_feedback: int = 20):
        self.sessions, self.project, self.names, self.min_feedback = sessions, project, names, min_feedback
        self.alerting = False

    def collect(self):
        from sqlalchemy.exc import SQLAlchemyError

        from ..feedback.monitor import alert, feedback_counts

        try:
            with self.sessions() as s:
                rows = feedback_counts(s, self.project)
                db = s.get_bind().url.render_as_string(hide_password=True)
        except SQLAlchemyError as err:  # the store is down: the engine's figures still go out
            logging.getLogger("rlhf.serve").warning("feedback gauges skipped: %s", err)
            return
        labels = ["version", "model"]
        thumbs = GaugeMetricFamily("rlhf_feedback_thumbs", "live thumbs on the version's answers", labels=labels)
        share = GaugeMetricFamily("rlhf_feedback_thumbs_up_share", "share of thumbs that are up", labels=labels)
        low = GaugeMetricFamily("rlhf_feedback_thumbs_up_low", "lower end of the share's 95% interval", labels=labels)
        for r in rows:
            key = [r["version"], self.names.get(r["version"], "")]
            thumbs.add_metric(key, r["thumbs"])
            share.add_metric(key, r["up_share"])
            low.add_metric(key, r["up_low"])
        message = alert(rows, self.min_feedback, db, self.project)
        if message and not self.alerting:
            logging.getLogger("rlhf.serve").warning("ALERT %s", message)
        self.alerting = message is not None
        yield from (thumbs, share, low, GaugeMetricFamily("rlhf_feedback_alert", "the newest version is worse than "
                                                          "the one before it", value=float(self.alerting)))


# The fields a route adds to its request's access line (`note_prompt`); set per request only
# under --log-prompts, so without it a route's prompt is never held for the log.
_ACCESS_EXTRA: ContextVar[dict | None] = ContextVar("rlhf_serve_access_extra", default=None)


def note_prompt(key: str, value) -> None:
    """Put the request's prompt (`messages` of a chat, `prompt` of a completion) in its access
    line when the server runs with --log-prompts; a no-op otherwise."""
    extra = _ACCESS_EXTRA.get()
    if extra is not None:
        extra[key] = value


class RequestCounter:
    """ASGI middleware: every HTTP answer counted by route (`/v1/...`, `/chat...`, else "other") and
    status, and one structured access-log line (method, path, status, milliseconds; never a body,
    so never a prompt, unless `log_prompts`: then the prompt the route noted with `note_prompt`)."""

    def __init__(self, app, metrics: ServeMetrics, log_prompts: bool = False):
        self.app, self.metrics, self.log_prompts = app, metrics, log_prompts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, recorded = time.perf_counter(), [500], [False]
        extra: dict = {}
        # the route runs in this task's context (or a copy of it), so it fills this request's `extra`
        noted = _ACCESS_EXTRA.set(extra) if self.log_prompts else None

        def record() -> None:
            if recorded[0]:
                return
            recorded[0] = True
            path = INVITE_IN_PATH.sub(r"\1<token>", scope["path"])  # never in a log line or a metric label
            self.metrics.count_request(path if path.startswith(("/v1/", "/chat")) else "other", status[0])
            ACCESS_LOG.info(json.dumps({"method": scope["method"], "path": path, "status": status[0],
                                        "ms": round(1000 * (time.perf_counter() - start), 1),
                                        "client": (scope.get("client") or ("", 0))[0], **extra}))

        async def seen(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                record()  # before the last byte leaves, so a client that has its answer can already see it counted
            await send(message)

        try:
            await self.app(scope, receive, seen)
        finally:
            record()  # an answer that never finished (an error, a client that left) is counted too
            if noted is not None:
                _ACCESS_EXTRA.reset(noted)
