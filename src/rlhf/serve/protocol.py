"""The OpenAI request bodies `rlhf serve` accepts, and its OpenAI-style errors.

Fields the server does not act on (logprobs, presence_penalty, user, ...) are accepted and
ignored, as other OpenAI-compatible servers do, so that clients sending them keep working.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse


class ApiError(Exception):
    """An error the client caused: becomes {"error": {...}} with `status`."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   kind: str = "invalid_request_error", headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status,
                        headers=headers)


def _field(data: dict, name: str, kinds: tuple, default=None, check=None, why: str = ""):
    """data[name] if it has one of `kinds` (and passes `check`), else `default` when absent; ApiError otherwise."""
    if name not in data or data[name] is None:
        return default
    value = data[name]
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds) or (check and not check(value)):
        raise ApiError(400, f"{name}: {why or 'must be ' + ' or '.join(k.__name__ for k in kinds)}, got {value!r}",
                       param=name)
    return value


class _Sampling:
    """What chat and completion requests share: model, sampling settings, stream."""

    DEFAULT_MAX_TOKENS: int | None = None

    def __init__(self, data: dict):
        self.model = _field(data, "model", (str,))
        if self.model is None:
            raise ApiError(400, "model: required", param="model")
        self.max_tokens = _field(data, "max_tokens", (int,), self.DEFAULT_MAX_TOKENS)
        self.max_completion_tokens = _field(data, "max_completion_tokens", (int,))  # the newer name in chat requests
        self.temperature = float(_field(data, "temperature", (int, float), 1.0, lambda v: 0 <= v <= 2, "must be in [0, 2]"))
        self.top_p = float(_field(data, "top_p", (int, float), 1.0, lambda v: 0 < v <= 1, "must be in (0, 1]"))
        self.n = _field(data, "n", (int,), 1, lambda v: v >= 1, "must be at least 1")
        self.stop = _field(data, "stop", (str, list), None)
        self.seed = _field(data, "seed", (int,))
        self.stream = _field(data, "stream", (bool,), False)
        options = _field(data, "stream_options", (dict,), {})
        self.include_usage = bool(options.get("include_usage", False))

    def limit(self) -> int | None:
        value = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        if value is not None and value < 1:
            name = "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"
            raise ApiError(400, f"{name} must be at least 1, got {value}", param=name)
        return value

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not isinstance(s, str) or not s for s in stops):
            raise ApiError(400, "stop must be up to 4 non-empty strings", param="stop")
        return tuple(stops)


ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def _content_text(content) -> str:
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content or ""


class ChatRequest(_Sampling):
    def __init__(self, data: dict):
        super().__init__(data)
        messages = _field(data, "messages", (list,), None, lambda v: len(v) > 0, "must be a non-empty list")
        if messages is None:
            raise ApiError(400, "messages: required", param="messages")
        self.messages: list[tuple[str, str]] = []  # (role, text)
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), (str, list, type(None))):
                raise ApiError(400, f"messages.{i}: needs a role ({', '.join(ROLES)}) and a string content",
                               param=f"messages.{i}")
            self.messages.append((ROLES[m["role"]], _content_text(m.get("content"))))


class CompletionRequest(_Sampling):
    DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions

    def __init__(self, data: dict):
        super().__init__(data)
        self.prompt = _field(data, "prompt", (str, list))
        if self.prompt is None:
            raise ApiError(400, "prompt: required", param="prompt")
        self.echo = _field(data, "echo", (bool,), False)
