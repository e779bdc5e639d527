"""A fake OpenAI-compatible judge for the tests: a tiny FastAPI app served by uvicorn on 127.0.0.1
in a thread. It counts the requests (models and seeds asked) and answers `/v1/chat/completions` by a rule (`server.mode`):

- "longer": the longer of [Response A] / [Response B] wins ([[C]] when equally long); a score
  request gets `Rating: [[min(10, len // 2 + 1)]]`; critique and revision requests get a
  critique and "Revision: <the response> Everyone was kind." (a fair, consistent judge);
- "first": always [[A]] (a judge that only ever picks the first position);
- "garbage": never a verdict;
- "garbage-once": garbage on each pairwise request's first attempt (temperature 0), then "longer".

`server.delay` seconds of thinking per request shows how many it answers at once (`max_in_flight`);
after `server.fail_after` requests it refuses every other with 400 (a server that went away).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

PAIR = re.compile(r"\[Response A\]\n(.*?)\n\n\[Response B\]\n(.*?)\n\nExplain", re.S)
SINGLE = re.compile(r"\[Response\]\n(.*?)\n\n(?:Explain|\[Critique)", re.S)


def rule(mode: str, text: str, temperature: float) -> str:
    pair = PAIR.search(text)
    if pair:
        if mode == "first":
            return "Both are fine, but the first reads better.\n[[A]]"
        if mode == "garbage" or (mode == "garbage-once" and temperature == 0):
            return "I like them both very much."
        a, b = pair.group(1), pair.group(2)
        return "Longer is better here.\n" + ("[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]")
    response = SINGLE.search(text).group(1)
    if mode == "garbage":
        return "no idea"
    if "[Revision request]" in text:
        return f"Revision: {response} Everyone was kind."
    if "[Critique request]" in text:
        return "Critique: the response could be kinder."
    return f"Fine.\nRating: [[{min(10, len(response) // 2 + 1)}]]"


class FakeJudgeServer:
    def __init__(self, mode: str = "longer"):
        self.mode, self.requests, self.models_asked, self.seeds = mode, 0, [], []
        self.delay, self.fail_after, self.in_flight, self.max_in_flight = 0.0, None, 0, 0
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            if self.fail_after is not None and self.requests >= self.fail_after:
                return JSONResponse({"error": {"message": "the judge is gone", "type": "invalid_request_error"}},
                                    status_code=400)
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            await asyncio.sleep(self.delay)
            self.in_flight -= 1
            self.models_asked.append(body["model"])
            self.seeds.append(body.get("seed"))
            content = rule(self.mode, body["messages"][-1]["content"], float(body.get("temperature") or 0))
            return {"id": f"chatcmpl-{self.requests}", "object": "chat.completion", "created": int(time.time()),
                    "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "FakeJudgeServer":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake judge server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
