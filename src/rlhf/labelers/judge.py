"""The AI judge: pairwise preferences and 1-10 scores from a language model (RLAIF, LLM-as-a-judge).

A judge is a backend (a local model directory, decoded greedily with `rlhf.rollout`, or any
OpenAI-compatible endpoint through the official `openai` client), a versioned prompt template
shipped in `templates/` (`pairwise-v1`, `score-v1`, `critique-v1`, `revision-v1`) and an on-disk
cache of answers keyed by sha256(template version, judge identity, prompt, responses):

- every pair is asked in both orders (A, B) and (B, A); a verdict that does not survive the swap
  is a tie, and `position_bias` is the share of decisive answers that picked the first position;
- answers are parsed strictly (`[[A]]`, `[[B]]`, `[[C]]` = tie; `Rating: [[N]]`, N in 1..10); a
  malformed answer is asked again (at temperature RETRY_TEMPERATURE, seed = the attempt's number)
  up to `retries` times, then is a JudgeError naming the pair (or, with on_malformed="tie", a
  counted tie); a judge that gives no usable verdict at all is an error that says why (`no_verdict`);
- a cached answer is never asked again, malformed ones included (the cache keeps how many attempts
  failed): a rerun over the same inputs makes no request, and one with more `retries` asks only
  the new attempts, with new seeds. Endpoint errors: `judge_backends`.

As a labeller: `rlhf generate --label judge:SPEC` and `rlhf dpo --online --labeler judge:SPEC`
(registered in `rlhf.labelers.pairs.LABELER_PREFIXES`), where SPEC is a model directory or an
endpoint URL with options as a query: `judge:http://host:8000/v1?model=NAME&key_env=VAR&cache=FILE`.
As a scorer (`module:function`): `rlhf.labelers.judge:score` judges with the spec in the
environment variable RLHF_JUDGE (same SPEC) and returns the 1-10 ratings.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence
from urllib.parse import parse_qs, urlsplit, urlunsplit

from ..data.records import PromptText, is_conversation
from .judge_backends import RETRY_TEMPERATURE, ApiBackend, JudgeEndpointError, LocalBackend  # noqa: F401

VERDICT = re.compile(r"\[\[([ABC])\]\]")
RATING = re.compile(r"Rating:\s*\[\[(\d+)\]\]")


class JudgeError(ValueError):
    """A judge's answer could not be parsed after its retries; the message names the item."""


def template(name: str) -> str:
    """The text of a shipped template (`pairwise-v1`, ...); its name is its version."""
    path = resources.files("rlhf.labelers") / "templates" / f"{name}.txt"
    if not path.is_file():
        shipped = sorted(p.name.removesuffix(".txt") for p in (resources.files("rlhf.labelers") / "templates").iterdir())
        raise ValueError(f"unknown judge template {name!r}; shipped: {', '.join(shipped)}")
    return path.read_text(encoding="utf-8")


def render_prompt(prompt: PromptText) -> str:
    """A prompt as the judge reads it: the text, or a conversation as `role: content` lines."""
    if is_conversation(prompt):
        return "\n".join(f"{m.role}: {m.content}" for m in prompt)
    return prompt


# ---------------------------------------------------------------- cache


class AnswerCache:
    """Answers in a JSON-lines file, appended as they come: `{"key", "answer"}` for a parsed answer,
    `{"key", "malformed", "attempts", "max_tokens"}` for a request whose `attempts` answers (the last
    one kept) were all malformed, so that a rerun does not ask it again the same way."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self.answers: dict[str, object] = {}
        self.malformed: dict[str, dict] = {}  # key -> {"malformed": last answer, "attempts", "max_tokens"}
        if self.path is not None and self.path.exists():
            for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                        if "answer" in row:
                            self.answers[row["key"]] = row["answer"]
                        else:
                            self.malformed[row["key"]] = {k: row[k] for k in ("malformed", "attempts", "max_tokens")}
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise ValueError(f"{self.path}:{n}: not a judge cache line") from None

    @staticmethod
    def key(*parts) -> str:
        return hashlib.sha256(json.dumps(parts, ensure_ascii=False, sort_keys=True).encode()).hexdigest()

    def attempts(self, key: str, max_tokens) -> int:
        """Malformed answers already had for `key` at this answer length (0 when none)."""
        entry = self.malformed.get(key)
        return entry["attempts"] if entry and entry["max_tokens"] == max_tokens else 0

    def put(self, key: str, answer) -> None:
        self.answers[key] = answer
        self._append({"key": key, "answer": answer})

    def put_malformed(self, key: str, answer: str, attempts: int, max_tokens) -> None:
        self.malformed[key] = {"malformed": answer[:500], "attempts": attempts, "max_tokens": max_tokens}
        self._append({"key": key, **self.malformed[key]})

    def _append(self, row: dict) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------- parsing


def parse_verdict(answer: str) -> str | None:
    """"A", "B" or "C" (tie) when the answer holds exactly one kind of [[X]] verdict, else None."""
    found = set(VERDICT.findall(answer))
    return found.pop() if len(found) == 1 else None


def parse_rating(answer: str) -> int | None:
    """N from "Rating: [[N]]" when there is exactly one and 1 <= N <= 10, else None."""
    found = RATING.findall(answer)
    return int(found[0]) if len(found) == 1 and 1 <= int(found[0]) <= 10 else None


def parse_revision(answer: str) -> str | None:
    """The text after "Revision:", when there is some."""
    head, sep, text = answer.partition("Revision:")
    return text.strip() or None if sep else None


def parse_critique(answer: str) -> str | None:
    text = answer.strip().removeprefix("Critique:").strip()
    return text or None


# ---------------------------------------------------------------- the judge


@dataclass
class Stats:
    requests: int = 0  # requests sent to the backend (retries included)
    cache_hits: int = 0  # answers read from the cache (malformed_cached included)
    malformed_cached: int = 0  # cached malformed answers, not asked again (more --retries asks them with new seeds)
    retries: int = 0  # malformed answers asked again
    malformed: int = 0  # answers still malformed after the retries (on_malformed="tie" only)
    first_wins: int = 0  # decisive pairwise answers that picked the first position
    decisive: int = 0  # pairwise answers that picked a position (not [[C]], not malformed)
    flipped: int = 0  # pairs decided in both orders whose verdict flipped with the order

    @property
    def position_bias(self) -> float | None:
        """Share of decisive answers that picked the first position (0.5 = no bias); None without any."""
        return self.first_wins / self.decisive if self.decisive else None


@dataclass
class Judge:
    """Asks `backend` through `templates`, caches every parsed answer, counts what it did in `stats`."""

    backend: object  # ApiBackend | LocalBackend | anything with .identity and .complete(texts, attempt)
    cache: AnswerCache
    retries: int = 2
    on_malformed: str = "error"  # error: JudgeError after the retries; tie: count it and record a tie
    pairwise_template: str = "pairwise-v1"
    score_template: str = "score-v1"
    stats: Stats = field(default_factory=Stats)

    def ask(self, version: str, fills: list[dict], parse, names: list[str], expected: str) -> list:
        """Parsed answers to `template(version)` filled with each of `fills`. Cached answers are not asked
        again, nor are cached malformed ones past their retries: attempt n of a request is asked once
        (seed n), in this run or a later one with more `retries`."""
        text = template(version)
        budget = getattr(self.backend, "max_tokens", None)  # a longer answer may hold what a short one cut off
        keys = [AnswerCache.key(version, self.backend.identity, f) for f in fills]
        out = [self.cache.answers.get(k) for k in keys]
        tried = [0 if a is not None else self.cache.attempts(k, budget) for k, a in zip(keys, out)]
        last = {i: self.cache.malformed[keys[i]]["malformed"] for i, n in enumerate(tried) if n}
        self.stats.cache_hits += sum(a is not None for a in out)
        asked: set[int] = set()
        for attempt in range(self.retries + 1):
            todo = [i for i, a in enumerate(out) if a is None and tried[i] == attempt]
            if not todo:
                continue
            asked.update(todo)
            if attempt:
                self.stats.retries += len(todo)
            group = getattr(self.backend, "batch_size", None) or len(todo)
            for start in range(0, len(todo), group):  # cached group by group: a run stopped midway keeps what it had
                chunk = todo[start:start + group]
                answers = self.backend.complete([text.format(**fills[i]) for i in chunk], attempt)
                self.stats.requests += len(chunk)
                for i, answer in zip(chunk, answers):
                    parsed = parse(answer)
                    if parsed is None:
                        tried[i], last[i] = attempt + 1, answer
                        self.cache.put_malformed(keys[i], answer, attempt + 1, budget)
                    else:
                        out[i] = parsed
                        self.cache.put(keys[i], parsed)
        left = [i for i, a in enumerate(out) if a is None]
        cached = sum(i not in asked for i in left)  # malformed in an earlier run, past the retries: not asked now
        self.stats.cache_hits += cached
        self.stats.malformed_cached += cached
        if left and self.on_malformed == "error":
            i = left[0]
            raise JudgeError(f"judge {self.backend.identity} ({version}): malformed answer for {names[i]} after "
                             f"{tried[i]} attempts, expected {expected}; last answer: {last[i][:200]!r}; "
                             f"{len(left)} of {len(fills)} answers malformed. "
                             f"{self.malformed_hint(none_parsed=len(left) == len(fills))}")
        self.stats.malformed += len(left)
        return out

    def malformed_hint(self, none_parsed: bool = True) -> str:
        """What to change when answers do not parse: the judge model (when `none_parsed`: no answer held
        what the template asks for), the answer length (when answers stopped at it), the retries."""
        backend, hint = self.backend, ""
        if none_parsed:
            flag = "--api-model NAME" if isinstance(backend, ApiBackend) else "--model DIR"
            hint = (f"The judge does not answer in the form the template asks for: use an instruction-tuned judge "
                    f"model ({flag}; a policy trained here is not one). ")
        if getattr(backend, "truncated", None):
            fitted = getattr(backend, "fitted", {})
            hint += (f"{backend.truncated} answers stopped at the token limit ({backend.max_tokens}; as few as "
                     f"{min(fitted.values())} to fit the model's context of {backend.context}): a judge with a "
                     f"longer context gives them room. " if fitted else
                     f"{backend.truncated} answers stopped at the token limit ({backend.max_tokens}): raise "
                     f"--max-new-tokens. ")
        retry = f"--retries {self.retries + 1} or more asks them again with new seeds"
        if self.cache.path is None:
            return hint + retry[0].upper() + retry[1:] + "."
        return hint + f"Malformed answers are cached (in {self.cache.path}): a rerun does not ask them again; {retry}."

    def prefer(self, prompts: Sequence[PromptText], firsts: Sequence[str], seconds: Sequence[str]) -> list[int | None]:
        """For each pair: 0 when the first response wins in both orders, 1 when the second does,
        None (a tie) when the verdict is [[C]] or flips with the order."""
        fills, names = [], []
        for n, (p, a, b) in enumerate(zip(prompts, firsts, seconds)):
            shown = render_prompt(p)
            fills += [{"prompt": shown, "response_a": a, "response_b": b},
                      {"prompt": shown, "response_a": b, "response_b": a}]
            names += [f"pair {n} (prompt {shown[:60]!r}), order (first, second)",
                      f"pair {n} (prompt {shown[:60]!r}), order (second, first)"]
        verdicts = self.ask(self.pairwise_template, fills, parse_verdict, names, "[[A]], [[B]] or [[C]]")
        picks = []
        for forward, backward in zip(verdicts[0::2], verdicts[1::2]):
            for v in (forward, backward):
                if v in ("A", "B"):
                    self.stats.decisive += 1
                    self.stats.first_wins += v == "A"
            # in the swapped order "B" names the first response
            wins = {"A": 0, "B": 1}.get(forward), {"A": 1, "B": 0}.get(backward)
            self.stats.flipped += None not in wins and wins[0] != wins[1]
            picks.append(wins[0] if wins[0] is not None and wins[0] == wins[1] else None)
        return picks

    def score(self, prompts: Sequence[PromptText], responses: Sequence[str]) -> list[float]:
        """1-10 ratings, one per response (NaN for a malformed answer with on_malformed="tie")."""
        fills = [{"prompt": render_prompt(p), "response": r} for p, r in zip(prompts, responses)]
        names = [f"response {n} (prompt {f['prompt'][:60]!r})" for n, f in enumerate(fills)]
        ratings = self.ask(self.score_template, fills, parse_rating, names, "Rating: [[N]] with N in 1..10")
        return [float("nan") if r is None else float(r) for r in ratings]


def build_judge(model: str | None = None, api_base: str | None = None, api_model: str | None = None,
                api_key_env: str = "OPENAI_API_KEY", cache: str | os.PathLike | None = None, retries: int = 2,
                on_malformed: str = "error", max_new_tokens: int = 64, device="cpu", concurrency: int = 8,
                request_timeout: float = 600.0) -> Judge:
    """A Judge on a local model directory (`model`) or an endpoint (`api_base` + `api_model`)."""
    if (model is None) == (api_base is None):
        raise ValueError("a judge needs exactly one of a model directory (--model) or an endpoint (--api-base)")
    if api_base is not None:
        backend = ApiBackend(api_base, api_model or "", api_key_env, max_tokens=max(max_new_tokens, 16),
                             timeout=request_timeout, concurrency=concurrency)
    else:
        backend = LocalBackend(model, device, max_new_tokens)
    return Judge(backend, AnswerCache(cache), retries=retries, on_malformed=on_malformed)


def judge_from_spec(spec: str, device="cpu") -> Judge:
    """A Judge from `DIR` or `URL?model=NAME&key_env=VAR&cache=FILE&retries=N&on_malformed=tie`
    (cache default: judge-cache.jsonl in the working directory)."""
    parts = urlsplit(spec)
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(options) - {"model", "key_env", "cache", "retries", "on_malformed", "max_new_tokens"}
    if unknown:
        raise ValueError(f"judge spec {spec!r}: unknown option(s) {', '.join(sorted(unknown))}")
    common = dict(cache=options.get("cache", "judge-cache.jsonl"), retries=int(options.get("retries", 2)),
                  on_malformed=options.get("on_malformed", "error"),
                  max_new_tokens=int(options.get("max_new_tokens", 64)), device=device)
    if parts.scheme in ("http", "https"):
        base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return build_judge(api_base=base, api_model=options.get("model"),
                           api_key_env=options.get("key_env", "OPENAI_API_KEY"), **common)
    return build_judge(model=urlunsplit(("", "", parts.path, "", "")) if parts.query else spec, **common)


def labeler(spec: str, device="cpu") -> Judge:
    """`--label judge:SPEC` / `--labeler judge:SPEC`: a Judge, whose prefer() labels pairs."""
    return judge_from_spec(spec, device)


_SCORERS: dict[str, Judge] = {}


def score(prompts: Sequence[PromptText], responses: Sequence[str]) -> list[float]:
    """A `module:function` scorer (`rlhf.labelers.judge:score`): 1-10 ratings from the judge named
    by the environment variable RLHF_JUDGE (a SPEC as for `judge:SPEC`)."""
    spec = os.environ.get("RLHF_JUDGE")
    if not spec:
        raise ValueError("rlhf.labelers.judge:score needs RLHF_JUDGE=DIR or URL?model=NAME in the environment")
    if spec not in _SCORERS:
        _SCORERS[spec] = judge_from_spec(spec)
    return _SCORERS[spec].score(prompts, responses)


def summary(judge: Judge) -> dict:
    s, backend = judge.stats, judge.backend
    return {"judge": backend.identity, "requests": s.requests, "cache_hits": s.cache_hits, "retries": s.retries,
            "malformed": s.malformed, "malformed_cached": s.malformed_cached, "position_bias": s.position_bias,
            "decisive_answers": s.decisive, "flipped_pairs": s.flipped, "max_tokens": backend.max_tokens,
            "truncated_answers": getattr(backend, "truncated", None),
            "max_tokens_fitted": len(getattr(backend, "fitted", {})), "context": getattr(backend, "context", None)}


def no_verdict(judge: Judge, pairs: int) -> str:
    """Why `pairs` pairs gave no comparison, and what to change (a JudgeError's message)."""
    s = judge.stats
    parts = [f"{s.malformed} answers malformed"] if s.malformed else []
    if s.flipped:
        parts.append(f"{s.flipped} pairs whose verdict flipped with the order")
    hint = []
    if s.malformed:
        hint.append(judge.malformed_hint(none_parsed=s.decisive == 0))
    if s.flipped:
        hint.append(f"The verdicts follow the position, not the responses (position bias "
                    f"{s.position_bias:.2f}): use a stronger judge model.")
    if not hint:
        hint.append("The judge called every pair a tie ([[C]]): the responses may not differ enough to judge.")
    return (f"no usable verdict: {pairs} pairs -> 0 comparisons" + (f" ({', '.join(parts)})" if parts else "")
            + ". " + " ".join(hint))


__all__ = ["Judge", "JudgeError", "JudgeEndpointError", "AnswerCache", "ApiBackend", "LocalBackend", "build_judge",
           "judge_from_spec", "no_verdict", "labeler", "score", "template", "parse_verdict", "parse_rating",
           "parse_revision", "parse_critique", "summary"]
