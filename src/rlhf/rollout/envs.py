"""Environments for multi-turn rollouts (`rlhf.rollout.multiturn`), and the safe calculator they share.

An environment is any callable `(history) -> (observation, reward)`: `history` is the list of
`Turn`s so far (the prompt first, then the policy's and the environment's turns in order);
`observation` is the text appended after the policy's turn, or None when the episode is over;
`reward` is a float, summed over the episode.

`calculate("12*7")` evaluates + - * / on integers (parentheses and unary minus allowed) by
walking the `ast` of the expression and refusing every other node: no names, calls, attributes,
powers, floats or strings, so it is never `eval`. Division is exact (fractions): `7/2` is 7/2,
written "7/2". Expressions and intermediate results have size limits, so `9**9**9`-style blow-ups
cannot be written with the allowed operators either.

`CalculatorEnv` is the example tool environment of the arithmetic task: the policy writes
`<calc>12*7</calc>`, the environment answers `<result>84</result>` (or `<result>error: ...</result>`),
and a turn without a call is the final answer, rewarded 1 when its last number is the answer to
the prompt's problem (the prompt reads `EXPRESSION=`, e.g. "12*7=").
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

MAX_EXPRESSION_CHARS = 64  # a calculator call longer than this is refused before parsing
MAX_MAGNITUDE = 10**12  # every intermediate numerator and denominator stays below this
CALL = re.compile(r"<calc>(.*?)</calc>", re.DOTALL)
CALL_END = "</calc>"
NUMBER = re.compile(r"-?\d+")


class CalculatorError(ValueError):
    """The expression is not plain integer arithmetic, or cannot be computed (division by zero, too large)."""


_OPERATORS: dict[type, Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


def _value(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:  # bool is an int subclass: refused
        result = Fraction(node.value)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _value(node.operand)
        result = -inner if isinstance(node.op, ast.USub) else inner
    elif isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Div) and right == 0:
            raise CalculatorError("division by zero")
        result = _OPERATORS[type(node.op)](left, right)
    else:
        raise CalculatorError(f"only integers, + - * / and parentheses are allowed, not {type(node).__name__}")
    if abs(result.numerator) >= MAX_MAGNITUDE or result.denominator >= MAX_MAGNITUDE:
        raise CalculatorError(f"numbers beyond {MAX_MAGNITUDE:.0e} are refused")
    return result


def calculate(expression: str) -> Fraction:
    """The exact value of an integer arithmetic expression ("12*7" -> 84, "7/2" -> 7/2).

    Raises CalculatorError for anything else: names, calls, attributes, powers, floats, strings,
    division by zero, an expression over MAX_EXPRESSION_CHARS or a result over MAX_MAGNITUDE."""
    if not isinstance(expression, str):
        raise CalculatorError(f"the expression must be text, got {type(expression).__name__}")
    text = expression.strip()
    if not text:
        raise CalculatorError("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as err:
        raise CalculatorError(f"not an arithmetic expression: {text!r}") from err
    return _value(tree.body)


def format_value(value: Fraction) -> str:
    """84 -> "84", 7/2 -> "7/2"."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def last_number(text: str) -> int | None:
    """The last integer written in `text` ("so 12+7=19" -> 19), or None."""
    found = NUMBER.findall(text)
    return int(found[-1]) if found else None


@dataclass(frozen=True)
class Turn:
    role: str  # "prompt", "policy" or "env"
    text: str


def problem_of(prompt: str) -> str:
    """The expression of an arithmetic prompt: the text before its last "=" ("12+7=" -> "12+7")."""
    if "=" not in prompt:
        raise ValueError(f"an arithmetic prompt ends with '=': {prompt!r}")
    return prompt.rsplit("=", 1)[0].strip()


class CalculatorEnv:
    """The calculator tool for the arithmetic task (see the module docstring).

    `max_calls` bounds the tool calls of one episode: a call past it ends the episode unrewarded."""

    def __init__(self, max_calls: int = 2):
        if max_calls < 1:
            raise ValueError(f"max_calls must be >= 1, got {max_calls}")
        self.max_calls = max_calls

    def __call__(self, history: Sequence[Turn]) -> tuple[str | None, float]:
        if not history or history[0].role != "prompt" or history[-1].role != "policy":
            raise ValueError("the calculator environment answers a policy turn that follows the prompt")
        last = history[-1].text
        call = CALL.search(last)
        if call is None:  # no tool call: this turn is the answer
            answer = calculate(problem_of(history[0].text))
            return None, float(last_number(last) == answer)
        calls = sum(1 for turn in history if turn.role == "policy" and CALL.search(turn.text))
        if calls > self.max_calls:
            return None, 0.0
        try:
            result = format_value(calculate(call.group(1)))
        except CalculatorError as err:
            result = f"error: {err}"
        return f"<result>{result}</result>", 0.0


def calculator_env() -> CalculatorEnv:
    """The default calculator environment (for `module:function` lookups)."""
    return CalculatorEnv()
