"""Who answers the judge: a list of requests in, a list of answers out (`complete(texts, attempt)`).

- `ApiBackend`: any OpenAI-compatible endpoint through the official `openai` client. `max_tokens`
  is a cap, fitted to the served model's context: when the server answers that the cap plus the
  request's tokens do not fit (`context_length_exceeded`, as `rlhf serve`, vLLM and OpenAI word
  it), the request is sent again with max_tokens = context - request tokens, the context read
  from the server's model card on `/v1/models` (`max_model_len`, as vLLM and `rlhf serve` report
  it) or else from the error. Any error the judge cannot recover from is a `JudgeEndpointError`:
  one line naming the endpoint, the model, the server's message and what to change.
- `LocalBackend`: a causal LM directory, decoded with `rlhf.rollout.sample_responses`.

Attempt 0 is greedy; a retry (attempt n) samples at RETRY_TEMPERATURE with seed n, so a retry,
in this run or a later one, is never the same question asked the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor

from ..data.records import Message

RETRY_TEMPERATURE = 0.7  # a retry samples, so a deterministic judge is not asked the same thing twice for nothing
CONTEXT_FIELDS = ("max_model_len", "context_length", "context_window")  # vLLM and rlhf serve; other servers
# the request's tokens and the model's context, as servers word a request that does not fit
REQUEST_TOKENS = (re.compile(r"the prompt's (\d+) tokens"), re.compile(r"the prompt is (\d+) tokens"),  # rlhf serve
                  re.compile(r"\((\d+) in the messages"),  # OpenAI, vLLM before 0.10
                  re.compile(r"(\d+) input tokens"))  # vLLM 0.10 and later
CONTEXT = (re.compile(r"context (?:of|is) (\d+) tokens"), re.compile(r"maximum context length is (\d+) tokens"))


class JudgeEndpointError(ValueError):
    """An endpoint error the judge cannot recover from, in one line."""


def room_left(message: str, context: int | None = None) -> tuple[int, int] | None:
    """(answer tokens that fit, context) from a server's "does not fit the context" message, or None
    when the message does not say how long the request is. `context` (from /v1/models) wins over
    the one in the message. The room is <= 0 when the request alone fills the context."""
    request = next((int(m.group(1)) for p in REQUEST_TOKENS if (m := p.search(message))), None)
    if context is None:
        context = next((int(m.group(1)) for p in CONTEXT if (m := p.search(message))), None)
    if request is None or context is None:
        return None
    return context - request, context


def _message(err) -> str:
    body = getattr(err, "body", None)
    text = body.get("message") if isinstance(body, dict) and body.get("message") else str(err)
    return " ".join(str(text).split())  # one line


class ApiBackend:
    """An OpenAI-compatible endpoint, asked through the official client (chat completions)."""

    def __init__(self, api_base: str, model: str, key_env: str = "OPENAI_API_KEY", max_tokens: int = 512,
                 timeout: float = 600.0, concurrency: int = 8):
        from openai import OpenAI  # only where an endpoint is used

        if not model:
            raise ValueError(f"judge endpoint {api_base}: name the model to ask (--api-model NAME or ?model=NAME)")
        key = os.environ.get(key_env) or "none"  # local servers take any key; a real one comes from key_env
        self.client = OpenAI(base_url=api_base, api_key=key, max_retries=2, timeout=timeout)
        self.api_base, self.model, self.key_env, self.max_tokens = api_base.rstrip("/"), model, key_env, max_tokens
        self.batch_size = concurrency  # the judge asks (and caches) this many texts at a time
        self.identity = f"api:{self.api_base}#{model}"
        self.context: int | None = None  # the served model's context, once a request did not fit
        self.fitted: dict[str, int] = {}  # request text -> max_tokens that fits (retries reuse it)
        self.truncated = 0  # answers that stopped at max_tokens (finish_reason "length")
        self._count = threading.Lock()  # complete() asks from several threads
        self._card: int | None = None  # the context on /v1/models once asked (0: the card has none)

    def complete(self, texts: list[str], attempt: int = 0) -> list[str]:
        """The answers to `texts`, asked at once (one thread each, up to `batch_size`): a batching server
        (rlhf serve, vLLM) decodes them together, where one at a time would leave it mostly idle."""
        if len(texts) <= 1:
            return [self._ask(text, attempt) for text in texts]
        with ThreadPoolExecutor(max_workers=min(len(texts), self.batch_size)) as pool:
            return list(pool.map(lambda text: self._ask(text, attempt), texts))

    def _ask(self, text: str, attempt: int) -> str:
        import openai

        max_tokens = self.fitted.get(text, self.max_tokens)
        while True:
            try:
                response = self.client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": text}], max_tokens=max_tokens,
                    temperature=0.0 if attempt == 0 else RETRY_TEMPERATURE, seed=attempt)
            except openai.BadRequestError as err:
                max_tokens = self._fit(err, max_tokens)
                self.fitted[text] = max_tokens
                continue
            except openai.APIError as err:
                raise self._error(err) from None
            choice = response.choices[0]
            with self._count:
                self.truncated += choice.finish_reason == "length"
            return choice.message.content or ""

    def _fit(self, err, max_tokens: int) -> int:
        """The max_tokens that fits the request the server refused with `err`; else a JudgeEndpointError."""
        message = _message(err)
        fit = room_left(message, self._served_context())
        if fit is None or fit[0] >= max_tokens:  # not a context error, or one that fitting cannot mend
            raise self._error(err) from None
        room, self.context = fit
        if room < 1:
            raise JudgeEndpointError(
                f"judge endpoint {self.api_base} (model {self.model!r}): a judge request alone fills the model's "
                f"context of {self.context} tokens ({message}): use a judge model with a longer context, or shorter "
                f"responses to judge") from None
        return room

    def _served_context(self) -> int | None:
        """The model's context from its card on /v1/models (`max_model_len`, ...), None where the server has none.
        Asked once."""
        import openai

        if self._card is None:
            try:
                extra = self.client.models.retrieve(self.model).model_extra or {}
            except openai.APIError:
                extra = {}
            self._card = next((int(extra[f]) for f in CONTEXT_FIELDS if isinstance(extra.get(f), int)), 0)
        return self._card or None

    def _error(self, err) -> JudgeEndpointError:
        import openai

        where = f"judge endpoint {self.api_base} (model {self.model!r})"
        status = getattr(err, "status_code", None)
        if isinstance(err, openai.APITimeoutError):
            hint = "no answer in time: is the server overloaded?"
        elif isinstance(err, openai.APIConnectionError):
            hint = "cannot reach it: is the server running at this address (--api-base)?"
        elif isinstance(err, openai.AuthenticationError):
            hint = f"the key was refused: put the endpoint's key in ${self.key_env} (--api-key-env names the variable)"
        elif isinstance(err, openai.NotFoundError):
            hint = "name a model the server has with --api-model"
        elif isinstance(err, openai.BadRequestError) and (err.code == "context_length_exceeded"
                                                          or "context" in _message(err).lower()):
            hint = f"lower --max-new-tokens (now {self.max_tokens})"
        else:
            hint = ""
        said = f"{status} {_message(err)}" if status else _message(err)
        return JudgeEndpointError(f"{where}: {said}" + (f" ({hint})" if hint else ""))


class LocalBackend:
    """A causal LM directory, decoded with `rlhf.rollout.sample_responses`: greedy, sampled on retries.
    Its identity names the directory and its weights' sizes and times, so retrained weights miss the cache."""

    truncated = None  # not counted: the sampler does not say why a response ended

    def __init__(self, model_dir: str, device="cpu", max_new_tokens: int = 64, batch_size: int = 16,
                 trust_remote_code: bool = False):
        from ..models.load import load_causal_lm, load_tokenizer, resolve_model_dir
        from ..rollout.attention import use_fp32_attention

        path = resolve_model_dir(model_dir)
        self.tokenizer = load_tokenizer(path, trust_remote_code)
        self.model = load_causal_lm(path, trust_remote_code).to(device).eval()
        use_fp32_attention(self.model)
        self.max_tokens, self.batch_size = max_new_tokens, batch_size
        stamp = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in path.glob("*.safetensors"))
        self.identity = f"local:{path.resolve()}#{hashlib.sha256(repr(stamp).encode()).hexdigest()[:12]}"

    def complete(self, texts: list[str], attempt: int = 0) -> list[str]:
        import torch

        from ..rollout.generate import SamplingConfig, sample_responses

        sampling = SamplingConfig(self.max_tokens, 0.0 if attempt == 0 else RETRY_TEMPERATURE)
        # a chat model reads the request as a user turn, through its chat template
        prompts = [(Message("user", t),) for t in texts] if self.tokenizer.chat_template else texts
        with torch.no_grad():
            out = sample_responses(self.model, self.tokenizer, prompts, sampling, k=1, seed=attempt,
                                   batch_size=self.batch_size)
        return [rs[0] for rs in out]
