"""Verifiable rewards: programs that check a response, for RL from verifiable rewards (RLVR).

Each reward is a scorer `(prompts, responses, answers=None) -> Scores`, usable wherever a
`module:function` scorer is accepted (`rlhf ppo --reward rlhf.rewards.verifiable:exact_match`).
`answers` holds each row's reference, the prompt row's optional "answer" field; `Scores` is a
list of floats with named `parts`, which `rlhf ppo` logs as `reward/<name>` each step.

- ``verifiable``: exact_match (final answer, numbers normalised), answer_format, boxed_format,
  gsm8k_format, json_valid, json_schema (schema from the row), correct_with_format (a weighted
  sum); the factories regex_format and weighted_sum; extract_answer, parse_number
- ``schema``: the JSON Schema subset json_schema checks (validate)
- ``scores``: Scores
"""

from rlhf.rewards.schema import validate
from rlhf.rewards.scores import Scores
from rlhf.rewards.verifiable import (
    answer_format,
    boxed_format,
    correct_with_format,
    exact_match,
    extract_answer,
    gsm8k_format,
    json_schema,
    json_valid,
    parse_number,
    regex_format,
    weighted_sum,
)

__all__ = ["Scores", "validate", "exact_match", "answer_format", "boxed_format", "gsm8k_format", "json_valid",
           "json_schema", "correct_with_format", "regex_format", "weighted_sum", "extract_answer", "parse_number"]
