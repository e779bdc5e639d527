"""`GET /metrics` and `GET /health` of `rlhf label serve` (the same two routes `rlhf serve` has).

    rlhf_label_requests_total{route, status}           HTTP requests answered, by route and status code
    rlhf_label_request_duration_seconds{route}         time to answer (histogram)
    rlhf_label_labels_submitted_total{project, outcome} labels stored by annotators (a resent form counts once)

`route` is the route's pattern (`/annotate/{task_id}`, `/join/{token}`), never the path a client
sent: invite tokens stay out of the metrics and the number of series stays bounded. A request no
route answered is `other`: a path no route matches (404), or one refused before routing (the
401 given before a body is read, a 413). Each app has its own registry
(tests start several).
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send


class LabelMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("rlhf_label_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.latency = Histogram("rlhf_label_request_duration_seconds", "time to answer a request", ["route"], registry=r)
        self.labels = Counter("rlhf_label_labels_submitted", "labels stored by annotators", ["project", "outcome"],
                              registry=r)

    def label_saved(self, project: str, outcome: str) -> None:
        self.labels.labels(project, outcome).inc()

    def response(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def database_ready(sessions) -> str | None:
    """None when the store answers a query, else why not."""
    try:
        with sessions() as s:
            s.execute(text("SELECT 1"))
        return None
    except Exception as err:  # any driver error means "not ready": the balancer should look elsewhere
        return f"{type(err).__name__}: {err}"


async def health(sessions) -> JSONResponse:
    """Ready (200) once the app is built and its store answers; 503 while the database does not."""
    problem = await run_in_threadpool(database_ready, sessions)
    if problem:
        return JSONResponse({"status": "unavailable", "database": problem}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


class RequestMetrics:
    """ASGI middleware, outermost: every answer counted and timed by route pattern and status,
    those refused before routing (401 before the body, 413) included."""

    def __init__(self, app: ASGIApp, metrics: LabelMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, recorded = time.perf_counter(), [500], [False]

        def record() -> None:
            if recorded[0]:
                return
            recorded[0] = True
            route = getattr(scope.get("route"), "path", None) or "other"  # the router sets it on a match
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)

        async def seen(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                record()  # before the last byte leaves: a client that has its answer finds it counted
            await send(message)

        try:
            await self.app(scope, receive, seen)
        finally:
            record()
