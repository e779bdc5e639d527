"""Rewards a program checks: the final answer, the format, JSON against a schema, and weighted sums.

Every reward here is a scorer `(prompts, responses, answers=None) -> Scores` (see
rlhf.rollout.scorers): name it as `rlhf.rewards.verifiable:exact_match` wherever a reward is
accepted. `answers` comes from the prompt rows' optional "answer" field, e.g.

    {"prompt": "What is 12 * 3?", "answer": "36"}

**The final answer of a response** (`extract_answer`), by the first rule that applies:
1. the text after the last `####` up to the end of its line (GSM8K's convention);
2. the contents of the last `\\boxed{...}` (braces balanced; MATH's convention);
3. the last number in the text (`-1,234.5`, `7`, `.5`);
4. the whole text, stripped (for answers that are words: "Paris.").
A reference answer goes through the same rule, so "#### 72" and "72" are the same reference.

**Numbers** (`parse_number`) are compared as numbers: "1,000" = "1000" = "1000.0" = "$1000";
thousands separators must group digits by three. Two answers that are not both numbers are
compared as text, ignoring case, surrounding space, repeated spaces and a final period.

Parameterised rewards (a pattern, a schema fixed in advance, weights) are made by the factories
`regex_format` and `weighted_sum` in a module of your own, named as `yourmodule:reward`.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from typing import Callable, Mapping, Sequence

from .schema import validate
from .scores import Scores

NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_NUMBER_TEXT = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|[-+]?\.\d+")


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None  # unbalanced: no answer


def extract_answer(text: str) -> str | None:
    """The final answer of `text` by the rules of the module docstring, or None when none applies."""
    if "####" in text:
        return text.rsplit("####", 1)[1].split("\n", 1)[0].strip()
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    numbers = NUMBER.findall(text)
    if numbers:
        return numbers[-1]
    return text.strip() or None


def parse_number(text: str) -> float | None:
    """`text` as a number ("1,000", "$1000", "1000.0", "-3", "50%" -> 50.0), or None when it is not one."""
    cleaned = text.strip().strip("$").rstrip("%").rstrip(".").strip()
    if not _NUMBER_TEXT.fullmatch(cleaned):
        return None
    value = float(cleaned.replace(",", ""))
    return value if math.isfinite(value) else None


def _normal_text(text: str) -> str:
    return " ".join(text.strip().rstrip(".").split()).lower()


def answers_match(predicted: str | None, reference: str) -> bool:
    """Whether a response's final answer is the reference (numbers as numbers, else as text)."""
    if predicted is None:
        return False
    ref = extract_answer(reference) if ("####" in reference or "\\boxed{" in reference) else reference
    if ref is None:
        return False
    a, b = parse_number(predicted), parse_number(ref)
    if a is not None and b is not None:
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return _normal_text(predicted) == _normal_text(ref)


def _references(answers: Sequence[str | None] | None, n: int, reward: str) -> list[str]:
    if answers is None or len(answers) != n:
        raise ValueError(f"{reward} needs the reference answers: give each prompt row an \"answer\" field")
    missing = [i for i, a in enumerate(answers) if a is None]
    if missing:
        raise ValueError(f"{reward}: {len(missing)} prompt row(s) have no \"answer\" field (first: row {missing[0]})")
    return list(answers)


def exact_match(prompts: Sequence, responses: Sequence[str], answers: Sequence[str | None] | None = None) -> Scores:
    """1.0 where the response's final answer equals the row's reference answer, else 0.0."""
    refs = _references(answers, len(responses), "exact_match")
    values = [float(answers_match(extract_answer(r), ref)) for r, ref in zip(responses, refs)]
    return Scores(values, {"exact_match": values})


def regex_format(pattern: str, name: str = "format", flags: int = re.DOTALL) -> Callable[..., Scores]:
    """A reward of 1.0 for responses in which `pattern` is found (re.search; anchor it with ^ and $
    for the whole response), else 0.0; its part is logged as reward/<name>."""
    compiled = re.compile(pattern, flags)

    def reward(prompts: Sequence, responses: Sequence[str], answers=None) -> Scores:
        values = [float(compiled.search(r) is not None) for r in responses]
        return Scores(values, {name: values})

    reward.__name__ = name
    return reward


gsm8k_format = regex_format(r"####\s*\S+\s*$", "gsm8k_format")  # ends in "#### <answer>"
boxed_format = regex_format(r"\\boxed\{.+\}", "boxed_format")  # holds a \boxed{<answer>}


def answer_format(prompts: Sequence, responses: Sequence[str], answers=None) -> Scores:
    """1.0 where the response states its final answer explicitly (`#### x` or `\\boxed{x}`), else 0.0."""
    values = [float(a == 1.0 or b == 1.0) for a, b in zip(gsm8k_format(prompts, responses),
                                                       boxed_format(prompts, responses))]
    return Scores(values, {"answer_format": values})


def parse_json_response(text: str):
    """The JSON value of a response: the whole text, else the span from the first `{` or `[` to the
    last `}` or `]` (a response that wraps its JSON in words or a code fence). Raises ValueError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
        end = max(text.rfind("}"), text.rfind("]"))
        if not starts or end < min(starts):
            raise ValueError("no JSON value in the response") from None
        try:
            return json.loads(text[min(starts) : end + 1])
        except json.JSONDecodeError as err:
            raise ValueError(f"not valid JSON: {err}") from None


def _parses(text: str) -> bool:
    try:
        parse_json_response(text)
        return True
    except ValueError:
        return False


def json_valid(prompts: Sequence, responses: Sequence[str], answers=None) -> Scores:
    """1.0 where the response holds a valid JSON value (`parse_json_response`), else 0.0."""
    values = [float(_parses(r)) for r in responses]
    return Scores(values, {"json_valid": values})


def json_schema(prompts: Sequence, responses: Sequence[str], answers: Sequence[str | None] | None = None) -> Scores:
    """1.0 where the response's JSON conforms to the row's schema (its "answer" field: a JSON
    Schema object, checked with the subset of rlhf.rewards.schema), else 0.0."""
    values = []
    for i, (response, text) in enumerate(zip(responses, _references(answers, len(responses), "json_schema"))):
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"json_schema: row {i}'s \"answer\" is not a JSON schema: {err}") from None
        try:
            instance = parse_json_response(response)
        except ValueError:
            values.append(0.0)
            continue
        values.append(float(not validate(instance, schema)))
    return Scores(values, {"json_schema": values})


def _call(reward: Callable, prompts: Sequence, responses: Sequence[str], answers) -> list[float]:
    params = inspect.signature(reward).parameters
    takes = "answers" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    values = list(reward(prompts, responses, answers=answers) if takes else reward(prompts, responses))
    if len(values) != len(responses):
        raise ValueError(f"reward {getattr(reward, '__name__', reward)!r} returned {len(values)} values "
                         f"for {len(responses)} responses")
    return [float(v) for v in values]


def weighted_sum(rewards: Mapping[str, tuple[Callable, float]]) -> Callable[..., Scores]:
    """A reward sum_name weight * reward_name(prompts, responses[, answers]), with each reward's own
    values as the part `name` (logged as reward/<name>, unweighted).

        reward = weighted_sum({"correct": (exact_match, 1.0), "format": (answer_format, 0.1)})
    """
    if not rewards:
        raise ValueError("weighted_sum needs at least one (reward, weight)")
    for name, pair in rewards.items():
        if not (isinstance(pair, tuple) and len(pair) == 2 and callable(pair[0])):
            raise ValueError(f"weighted_sum: {name!r} must map to (reward function, weight), got {pair!r}")

    def reward(prompts: Sequence, responses: Sequence[str], answers=None) -> Scores:
        parts = {name: _call(fn, prompts, responses, answers) for name, (fn, _) in rewards.items()}
        total = [sum(float(rewards[name][1]) * parts[name][i] for name in parts) for i in range(len(responses))]
        return Scores(total, parts)

    return reward


# The usual RLVR reward: 1 for the right answer, plus 0.1 for stating it in a checkable form.
correct_with_format = weighted_sum({"exact_match": (exact_match, 1.0), "answer_format": (answer_format, 0.1)})
