"""One parser per record kind: a decoded row (a dict) -> a record, or `RowError`.

`rlhf.data.formats` finds the rows in a file and names the file and line; this module only
says what is wrong with one row. The rules (the readers' docstrings point here):

- Prompts, documents and the messages of a prompt must hold some non-whitespace text. A
  response (completion, chosen, rejected, ranked responses) may be empty: an empty reply is a
  real reply that people judge (harmless-train has 4 pairs whose chosen reply is empty, the
  annotator preferring silence to a harmful answer).
- A prompt is a string or a list of `{"role", "content"}` messages ending with a user turn.
  A response is a string, an assistant message, or a list holding one assistant message
  (TRL's conversational format).
- Anthropic HH transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ...") are split into turns on
  those markers, each turn's text stripped, Human -> "user", Assistant -> "assistant".
  A single transcript (demonstration, prompt): the prompt is every turn up to and including
  the last Human turn; the reply is what follows (normally exactly the last Assistant turn).
  A pair (comparison): the prompt is the longest run of leading turns both transcripts share,
  cut back to end with a Human turn; chosen and rejected are what follows in each. When the
  transcripts differ before their last Assistant turn (5 of 1,800 pairs of harmless-train, 0
  of harmless-dev: generated replies that contain turn markers of their own), each reply is
  the rest of its transcript, later turns kept verbatim with their "\\n\\nHuman:" and
  "\\n\\nAssistant:" markers; with `strict_hh=True` such a pair is a row error instead.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from rlhf.data.records import (
    ROLES,
    BinaryFeedback,
    Comparison,
    Demonstration,
    Document,
    Message,
    Prompt,
    PromptText,
    Ranking,
)


class RowError(ValueError):
    """What is wrong with one row; `formats` adds the file and line."""


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _get(row: dict, key: str, hint: str = "") -> Any:
    if key not in row:
        raise RowError(f'missing key "{key}"{hint}')
    if row[key] is None:
        raise RowError(f'"{key}" is null')
    return row[key]


def _text(value: Any, key: str) -> str:
    """A string holding some non-whitespace text."""
    if not isinstance(value, str):
        raise RowError(f'"{key}" must be a string, got {json_type(value)}')
    if not value.strip():
        raise RowError(f'"{key}" is empty' if not value else f'"{key}" is whitespace only')
    return value


def _message(value: Any, key: str) -> Message:
    if not isinstance(value, dict):
        raise RowError(f'{key} must be an object with "role" and "content", got {json_type(value)}')
    if value.get("role") not in ROLES:
        raise RowError(f"{key} has invalid role {value.get('role')!r} "
                       f"(expected one of {', '.join(ROLES)})")
    content = value.get("content")
    if not isinstance(content, str):
        raise RowError(f'{key}["content"] must be a string, got {json_type(content)}')
    return Message(value["role"], content)


def _messages(value: Any, key: str) -> tuple[Message, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        got = "an empty array" if isinstance(value, (list, tuple)) else json_type(value)
        raise RowError(f'"{key}" must be a non-empty list of messages, got {got}')
    return tuple(_message(m, f'"{key}"[{i}]') for i, m in enumerate(value))


def _conversation(messages: tuple[Message, ...], key: str) -> tuple[Message, ...]:
    """Check a conversation used as a prompt: every turn has text, the last one is the user's."""
    for i, m in enumerate(messages):
        if not m.content.strip():
            raise RowError(f'"{key}"[{i}] ({m.role}) has empty content')
    if messages[-1].role != "user":
        raise RowError(f'"{key}" must end with a user turn, got {messages[-1].role}')
    return messages


def _prompt(value: Any, key: str = "prompt") -> PromptText:
    if isinstance(value, str):
        return _text(value, key)
    if isinstance(value, (list, tuple)):
        return _conversation(_messages(value, key), key)
    raise RowError(f'"{key}" must be a string or a list of messages, got {json_type(value)}')


def _response(value: Any, key: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
        key = f'"{key}"[0]'
    elif isinstance(value, dict):
        key = f'"{key}"'
    else:
        raise RowError(f'"{key}" must be a string or one assistant message, got {json_type(value)}'
                       + (f" of {len(value)} items" if isinstance(value, (list, tuple)) else ""))
    message = _message(value, key)
    if message.role != "assistant":
        raise RowError(f"{key} must be an assistant message, got role {message.role!r}")
    return message.content


# ---- Anthropic HH transcripts ----------------------------------------------------------

_MARKER = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}
_SPEAKER = {"user": "Human", "assistant": "Assistant"}


def is_transcript(value: Any) -> bool:
    return isinstance(value, str) and value.lstrip().startswith("Human:")


def _turns(value: Any, key: str) -> list[Message]:
    if not isinstance(value, str):
        raise RowError(f'"{key}" must be a string, got {json_type(value)}')
    parts = _MARKER.split("\n\n" + value.lstrip())
    if parts[0] or len(parts) < 3:
        raise RowError(f'"{key}" is not an HH transcript: it must start with "\\n\\nHuman:"')
    turns = [Message(_ROLE[who], text.strip()) for who, text in zip(parts[1::2], parts[2::2])]
    if not any(m.role == "assistant" for m in turns):
        raise RowError(f'"{key}" transcript has no Assistant turn')
    return turns


def _reply(turns: list[Message], key: str) -> str:
    """The turns after a prompt as one reply: the first turn's text, later turns verbatim."""
    if not turns:
        raise RowError(f'"{key}" transcript has no Assistant turn after the prompt')
    if turns[0].role != "assistant":
        raise RowError(f'"{key}" transcript continues with a Human turn after the prompt')
    rest = "".join(f"\n\n{_SPEAKER[m.role]}: {m.content}".rstrip() for m in turns[1:])
    return turns[0].content + rest


def _split_transcript(value: Any, key: str) -> tuple[tuple[Message, ...], str]:
    """One transcript -> (prompt up to its last Human turn, the reply after it)."""
    turns = _turns(value, key)
    last_user = max((i for i, m in enumerate(turns) if m.role == "user"), default=-1)
    if last_user < 0:
        raise RowError(f'"{key}" transcript has no Human turn')
    prompt = _conversation(tuple(turns[: last_user + 1]), key)
    return prompt, _reply(turns[last_user + 1 :], key)


def _shared_prompt(chosen: list[Message], rejected: list[Message]) -> int:
    """How many leading turns both share, cut back to end with a user turn."""
    k = 0
    while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
        k += 1
    while k > 0 and chosen[k - 1].role != "user":
        k -= 1
    if k == 0:
        raise RowError("chosen and rejected share no leading user turn to use as the prompt")
    return k


def _hh_comparison(row: dict, strict_hh: bool) -> Comparison:
    chosen, rejected = _turns(row["chosen"], "chosen"), _turns(_get(row, "rejected"), "rejected")
    k = _shared_prompt(chosen, rejected)
    if strict_hh and (len(chosen) > k + 1 or len(rejected) > k + 1):
        raise RowError("chosen and rejected transcripts differ before their last Assistant turn")
    prompt = _conversation(tuple(chosen[:k]), "chosen")
    return Comparison(prompt, _reply(chosen[k:], "chosen"), _reply(rejected[k:], "rejected"), _margin(row))


def _implicit_comparison(row: dict) -> Comparison:
    """TRL's implicit-prompt conversational format: two full conversations sharing a prefix."""
    chosen, rejected = _messages(row["chosen"], "chosen"), _messages(_get(row, "rejected"), "rejected")
    k = _shared_prompt(list(chosen), list(rejected))
    for key, rest in (("chosen", chosen[k:]), ("rejected", rejected[k:])):
        if len(rest) != 1 or rest[0].role != "assistant":
            raise RowError(f'after the shared prompt, "{key}" must hold one assistant message, '
                           f"got roles {[m.role for m in rest]}")
    return Comparison(_conversation(chosen[:k], "chosen"), chosen[k].content, rejected[k].content,
                      _margin(row))


# ---- one parser per record kind ----------------------------------------------------------


def _margin(row: dict) -> float | None:
    margin = row.get("margin")
    if margin is None:
        return None
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
        raise RowError(f'"margin" must be a finite number, got {json_type(margin)} {margin!r}')
    return float(margin)


def document(row: dict) -> Document:
    return Document(_text(_get(row, "text"), "text"))


def demonstration(row: dict) -> Demonstration:
    if row.get("messages") is not None:
        messages = _messages(row["messages"], "messages")
        if messages[-1].role != "assistant":
            raise RowError(f'the last of "messages" must be an assistant turn, got {messages[-1].role}')
        if len(messages) < 2:
            raise RowError('"messages" has no user turn before the assistant reply')
        return Demonstration(_conversation(messages[:-1], "messages"), messages[-1].content)
    if row.get("prompt") is None and is_transcript(row.get("chosen")):
        return Demonstration(*_split_transcript(row["chosen"], "chosen"))
    prompt = _prompt(_get(row, "prompt", ' (or "messages", or an HH "chosen" transcript)'))
    return Demonstration(prompt, _response(_get(row, "completion"), "completion"))


def _whole_conversation(value) -> bool:
    """A list of messages that starts with the user's turn (not a response alone)."""
    return (isinstance(value, (list, tuple)) and len(value) > 1 and isinstance(value[0], dict)
            and value[0].get("role") in ("user", "system"))


def comparison(row: dict, strict_hh: bool = False) -> Comparison:
    if "chosen" not in row and ("responses" in row or "ranking" in row):
        raise RowError('missing key "chosen": this looks like a ranking row '
                       "(read it as rankings or preferences)")
    if row.get("prompt") is None:
        if is_transcript(row.get("chosen")):
            return _hh_comparison(row, strict_hh)
        if isinstance(row.get("chosen"), (list, tuple)):
            return _implicit_comparison(row)
    elif _whole_conversation(row.get("chosen")) and _whole_conversation(row.get("rejected")):
        # UltraFeedback-style: "prompt" as text beside whole conversations that repeat it
        return _implicit_comparison(row)
    prompt = _prompt(_get(row, "prompt", ' (or HH "chosen"/"rejected" transcripts)'))
    chosen = _response(_get(row, "chosen"), "chosen")
    return Comparison(prompt, chosen, _response(_get(row, "rejected"), "rejected"), _margin(row))


def ranking(row: dict) -> Ranking:
    prompt = _prompt(_get(row, "prompt"))
    responses = _get(row, "responses")
    if not isinstance(responses, (list, tuple)) or len(responses) < 2:
        raise RowError(f'"responses" must be a list of at least 2 responses, got {json_type(responses)}'
                       + (f" of {len(responses)}" if isinstance(responses, (list, tuple)) else ""))
    responses = tuple(_response(r, f"responses[{i}]") for i, r in enumerate(responses))
    order = _get(row, "ranking")
    if not isinstance(order, (list, tuple)) or not all(type(i) is int for i in order):
        raise RowError(f'"ranking" must be a list of integer indices, got {order!r}')
    if sorted(order) != list(range(len(responses))):
        raise RowError(f'"ranking" {list(order)} is not a permutation of 0..{len(responses) - 1} '
                       f"(one index per response)")
    return Ranking(prompt, responses, tuple(order))


def responses(row: dict) -> tuple[str, ...]:
    """The "responses" of a candidates row {"prompt", "responses": [...]} (what `rlhf generate`
    writes without --label), each a response as `_response` reads it."""
    value = _get(row, "responses")
    if not isinstance(value, list) or not value:
        raise RowError('"responses" must be a non-empty list of responses')
    return tuple(_response(r, f"responses[{i}]") for i, r in enumerate(value))


def binary_feedback(row: dict) -> BinaryFeedback:
    prompt = _prompt(_get(row, "prompt"))
    completion = _response(_get(row, "completion"), "completion")
    label = _get(row, "label")
    if not isinstance(label, bool):
        raise RowError(f'"label" must be true or false, got {json_type(label)} {label!r}')
    return BinaryFeedback(prompt, completion, label)


def prompt(row: dict) -> Prompt:
    if row.get("prompt") is None and is_transcript(row.get("chosen")):
        return Prompt(_split_transcript(row["chosen"], "chosen")[0], _answer(row))
    return Prompt(_prompt(_get(row, "prompt")), _answer(row))


def _answer(row: dict) -> str | None:
    """The optional reference answer of a prompt row (verifiable rewards): a string as it is, any
    other JSON value (a number, a JSON schema object) as its JSON text."""
    value = row.get("answer")
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def preference(row: dict, strict_hh: bool = False) -> Comparison | Ranking:
    if row.get("responses") is not None or row.get("ranking") is not None:
        return ranking(row)
    return comparison(row, strict_hh)
