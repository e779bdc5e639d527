"""The OpenAI-compatible API: /v1/models, /v1/chat/completions, /v1/completions.

Routes parse and check the request (errors are OpenAI-style objects with a 4xx), tokenise
through rlhf.data.tokenize (chat template for conversations), hand one `Sequence` per choice
to the model's engine and relay its events as one JSON answer or as server-sent events.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import AsyncIterator

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..data.records import Message
from ..data.tokenize import encode_prompt
from .engine import Sequence
from .metrics import CONTENT_TYPE_LATEST, RequestCounter, ServeMetrics, note_prompt
from .protocol import ApiError, ChatRequest, CompletionRequest, error_response


@dataclass
class ServedModel:
    """A model the server answers for: `name` is what clients pass as `model`."""

    name: str
    path: str  # the model directory (recorded with feedback)
    tokenizer: object
    engine: object  # rlhf.serve.engine.ContinuousEngine | SerialEngine
    stop_ids: frozenset  # token ids that end a response (EOS, end of turn)
    context: int  # positions the model can attend to: prompt + response at most
    created: int = 0


def create_app(models: dict[str, ServedModel], default_max_tokens: int = 256, max_n: int = 16,
               max_body_bytes: int = 2 * 2**20, sessions=None, project: str = "chat", max_queue: int = 256,
               request_timeout: float = 600.0, log_prompts: bool = False) -> FastAPI:
    """The API; with `sessions` (a feedback store's sessionmaker) also the chat page (rlhf.serve.chat),
    whose feedback goes to projects `<project>-thumbs` and `<project>-pairs`. A request that would
    queue more than `max_queue` sequences for a model's decode slots gets 429 with Retry-After. With
    `log_prompts` each request's access-log line holds its messages (or prompt)."""
    app = FastAPI(title="rlhf serve", docs_url=None, redoc_url=None)
    app.state.models = models
    metrics = app.state.metrics = ServeMetrics(models)

    # pure ASGI: a BaseHTTPMiddleware hides client disconnects
    app.add_middleware(RequestCounter, metrics=metrics, log_prompts=log_prompts)

    @app.get("/metrics")
    async def prometheus_metrics():
        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)
    if sessions is not None:
        metrics.watch_feedback(sessions, project, models)
        from .chat import mount_chat

        async def generate(served: ServedModel, conversation: list[dict], temperature: float, seed) -> str:
            note_prompt("messages", conversation)
            prompt = tuple(Message(m["role"], m["content"]) for m in conversation)
            ids = await run_in_threadpool(encode_prompt, served.tokenizer, prompt)
            if len(ids) >= served.context:
                raise ApiError(400, "the conversation is longer than the model's context", code="context_length_exceeded")
            events: asyncio.Queue = asyncio.Queue()
            seq = Sequence(prompt_ids=ids, max_tokens=min(default_max_tokens, served.context - len(ids)),
                           temperature=temperature, top_p=1.0, stop=(), events=events, loop=asyncio.get_running_loop(),
                           generator=None if seed is None else torch.Generator().manual_seed(seed),
                           tokenizer=served.tokenizer, stop_ids=served.stop_ids,
                           on_done=metrics.on_done(served.name))
            served.engine.submit([seq])
            await _drain([seq], events)
            if seq.finish == "error":
                raise ApiError(500, seq.error, kind="server_error")
            return seq.text

        mount_chat(app, models, sessions, project, generate)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return error_response(err.status, err.message, err.param, err.code, err.kind, err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        return error_response(err.status_code, str(err.detail), code=None)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception):
        return error_response(500, f"internal error: {type(err).__name__}: {err}", kind="server_error")

    @app.get("/health")
    async def health():  # the models load before the app exists: serving means ready
        return {"status": "ok", "models": sorted(models)}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [_card(m) for m in models.values()]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str):
        return _card(_model(models, name))

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        req = await _parse(request, ChatRequest, max_body_bytes)
        note_prompt("messages", [{"role": role, "content": text} for role, text in req.messages])
        served = _model(models, req.model)
        conversation = tuple(Message(role, text) for role, text in req.messages)
        if not getattr(served.tokenizer, "chat_template", None):
            raise ApiError(400, f"model {served.name!r} has no chat template: use /v1/completions", param="messages")
        prompts = [await run_in_threadpool(encode_prompt, served.tokenizer, conversation)]
        return await _answer(request, served, req, prompts, "chat", default_max_tokens, max_n,
                             on_done=metrics.on_done(served.name), max_queue=max_queue,
                             request_timeout=request_timeout)

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = await _parse(request, CompletionRequest, max_body_bytes)
        note_prompt("prompt", req.prompt)
        served = _model(models, req.model)
        texts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not texts or any(not isinstance(t, str) or not t for t in texts):
            raise ApiError(400, "prompt must be a non-empty string or list of non-empty strings", param="prompt")
        prompts = [await run_in_threadpool(encode_prompt, served.tokenizer, t) for t in texts]
        return await _answer(request, served, req, prompts, "text", default_max_tokens, max_n, texts if req.echo else None,
                             on_done=metrics.on_done(served.name), max_queue=max_queue,
                             request_timeout=request_timeout)

    return app


def _card(served: ServedModel) -> dict:
    """A model's entry on /v1/models; `max_model_len` is its context (prompt + answer), named as vLLM names it,
    so a client can fit `max_tokens` to what a prompt leaves (the judge does)."""
    return {"id": served.name, "object": "model", "created": served.created, "owned_by": "rlhf", "root": served.path,
            "max_model_len": served.context}


def _model(models: dict[str, ServedModel], name: str) -> ServedModel:
    if name not in models:
        raise ApiError(404, f"The model {name!r} does not exist; this server has {sorted(models)}", param="model",
                       code="model_not_found")
    return models[name]


async def _parse(request: Request, cls, max_body_bytes: int):
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_body_bytes:
        raise ApiError(413, f"request body of {declared} bytes is over the limit of {max_body_bytes}", code="body_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body_bytes:
            raise ApiError(413, f"request body is over the limit of {max_body_bytes} bytes", code="body_too_large")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the body is not valid JSON: {err}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_json")
    return cls(data)


async def _answer(request: Request, served: ServedModel, req, prompts: list[list[int]], kind: str,
                  default_max_tokens: int, max_n: int, echo: list[str] | None = None, on_done=None,
                  max_queue: int = 256, request_timeout: float = 600.0):
    if req.n * len(prompts) > max_n:
        raise ApiError(400, f"a request asks for at most {max_n} choices (prompts x n), got {req.n * len(prompts)}",
                       param="n")
    stops = req.stops()
    limit = req.limit()
    longest = max(len(p) for p in prompts)
    room = served.context - longest
    if room < 1:
        raise ApiError(400, f"the prompt is {longest} tokens; this model's context is {served.context} tokens",
                       param="messages" if kind == "chat" else "prompt", code="context_length_exceeded")
    if limit is not None and limit > room:
        raise ApiError(400, f"max_tokens {limit} + the prompt's {longest} tokens exceed this model's context of "
                            f"{served.context} tokens", param="max_tokens", code="context_length_exceeded")
    max_tokens = limit if limit is not None else min(default_max_tokens, room)
    waiting = getattr(served.engine, "waiting", 0)
    if waiting + req.n * len(prompts) > max_queue:  # backpressure: a bounded queue, not an unbounded wait
        raise ApiError(429, f"the server is busy ({waiting} sequences wait for model {served.name!r}); retry shortly",
                       code="rate_limit_exceeded", kind="rate_limit_error", headers={"Retry-After": "1"})
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    seqs = []
    for p, ids in enumerate(prompts):
        for j in range(req.n):
            index = p * req.n + j
            generator = None if req.seed is None else torch.Generator().manual_seed(req.seed + index)
            seqs.append(Sequence(prompt_ids=ids, max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p,
                                 stop=stops, generator=generator, events=events, loop=loop, index=index,
                                 tokenizer=served.tokenizer, stop_ids=served.stop_ids, on_done=on_done))
    served.engine.submit(seqs)
    ident = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
    usage = lambda: {"prompt_tokens": sum(len(p) for p in prompts),  # noqa: E731
                     "completion_tokens": sum(s.generated for s in seqs),
                     "total_tokens": sum(len(p) for p in prompts) + sum(s.generated for s in seqs)}
    head = {"id": ident, "created": int(time.time()), "model": served.name}
    if req.stream:
        include_usage = req.include_usage
        cancelled = request.app.state.metrics.cancelled
        return StreamingResponse(_stream(seqs, events, head, kind, usage, include_usage, echo, req.n, request_timeout,
                                         on_stop=lambda reason, k: cancelled.labels(served.name, reason).inc(k)),
                                 media_type="text/event-stream")
    try:
        gone = await _drain_watching(request, seqs, events, request_timeout)
    except BaseException:
        for s in seqs:
            s.cancelled = True
        raise
    if gone is not None:  # the decode slots are free again; nobody is left to answer
        for s in seqs:
            s.cancelled = True
        request.app.state.metrics.cancelled.labels(served.name, gone).inc(len(seqs))
        if gone == "timeout":
            raise ApiError(504, f"the request ran past the server's --request-timeout of {request_timeout:g} s",
                           code="timeout", kind="server_error")
        return Response(status_code=499)  # nginx's "client closed request": for the log and /metrics only
    failed = [s for s in seqs if s.finish == "error"]
    if failed:
        raise ApiError(500, failed[0].error, kind="server_error")
    if kind == "chat":
        choices = [{"index": s.index, "message": {"role": "assistant", "content": s.text}, "logprobs": None,
                    "finish_reason": s.finish} for s in seqs]
        return JSONResponse({**head, "object": "chat.completion", "choices": choices, "usage": usage()})
    choices = [{"index": s.index, "text": (echo[s.index // req.n] if echo else "") + s.text, "logprobs": None,
                "finish_reason": s.finish} for s in seqs]
    return JSONResponse({**head, "object": "text_completion", "choices": choices, "usage": usage()})


async def _drain_watching(request: Request, seqs: list[Sequence], events: asyncio.Queue,
                          timeout: float) -> str | None:
    """Wait for every sequence to finish, checking four times a second whether the client is still
    there; None when done, "disconnect" when the client left, "timeout" past `timeout` seconds (0 = none)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout else None
    drain = asyncio.ensure_future(_drain(seqs, events))
    try:
        while True:
            done, _ = await asyncio.wait({drain}, timeout=0.25)
            if done:
                drain.result()
                return None
            if await request.is_disconnected():
                return "disconnect"
            if deadline is not None and loop.time() > deadline:
                return "timeout"
    finally:
        drain.cancel()


async def _drain(seqs: list[Sequence], events: asyncio.Queue) -> None:
    open_ = len(seqs)
    while open_:
        _, _, finish = await events.get()
        open_ -= finish is not None


def _sse(data) -> str:
    return f"data: {json.dumps(data)}\n\n"


async def _stream(seqs, events, head, kind, usage, include_usage, echo, n, timeout: float = 0.0,
                  on_stop=lambda reason, count: None) -> AsyncIterator[str]:
    """The answer as server-sent events. Sequences still decoding when it ends early (the client left,
    or --request-timeout) are stopped and reported to `on_stop(reason, count)`."""
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    stopped_by = "disconnect"  # a generator closed before its end: the client went away

    def chunk(index: int, text: str | None, finish: str | None, first: bool = False) -> dict:
        if kind == "chat":
            delta = ({"role": "assistant", "content": ""} if first else {} if text is None else {"content": text})
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        return {**head, "object": obj, "choices": [choice], **({"usage": None} if include_usage else {})}

    try:
        for s in seqs:
            if kind == "chat":
                yield _sse(chunk(s.index, None, None, first=True))
            elif echo:
                yield _sse(chunk(s.index, echo[s.index // n], None))
        open_ = len(seqs)
        deadline = asyncio.get_running_loop().time() + timeout if timeout else None
        while open_:
            try:
                left = None if deadline is None else max(deadline - asyncio.get_running_loop().time(), 0.0)
                batch = [await asyncio.wait_for(events.get(), left)]
            except asyncio.TimeoutError:
                stopped_by = "timeout"
                yield _sse({"error": {"message": f"the request ran past the server's --request-timeout of {timeout:g} s",
                                      "type": "server_error", "param": None, "code": "timeout"}})
                return
            while not events.empty():  # what else is ready goes out in the same write
                batch.append(events.get_nowait())
            out = []
            for index, delta, finish in batch:
                if finish == "error":
                    stopped_by = "error"
                    yield "".join(out) + _sse({"error": {"message": delta, "type": "server_error", "param": None,
                                                         "code": None}})
                    return
                open_ -= finish is not None
                if delta:
                    out.append(_sse(chunk(index, delta, None)))
                if finish is not None:
                    out.append(_sse(chunk(index, None, finish)))
            yield "".join(out)
        if include_usage:
            yield _sse({**head, "object": obj, "choices": [], "usage": usage()})
        yield "data: [DONE]\n\n"
    finally:
        unfinished = sum(s.finish is None for s in seqs)
        for s in seqs:
            s.cancelled = True
        if unfinished:
            on_stop(stopped_by, unfinished)
