"""The JSON Schema subset of rlhf.rewards.schema."""

import pytest

from rlhf.rewards import validate


def test_conforming_values():
    schema = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                                               "score": {"type": "number", "exclusiveMaximum": 1},
                                               "kind": {"enum": ["a", "b"]}}, "required": ["tags"]}
    assert validate({"tags": ["x"], "score": 0.5, "kind": "a"}, schema) == []
    assert validate(3.0, {"type": "integer"}) == []  # JSON Schema counts 3.0 as an integer


def test_each_violation_is_named_with_its_place():
    schema = {"type": "object", "required": ["a"], "additionalProperties": False,
              "properties": {"b": {"type": "array", "items": {"type": "string", "minLength": 2}},
                             "c": {"type": "string", "pattern": "^[0-9]+$"}, "d": {"type": "integer", "minimum": 0}}}
    errors = validate({"b": ["ok", "x", 3], "c": "12a", "d": -1, "e": None}, schema)
    assert any("missing required property 'a'" in e for e in errors)
    assert any(e.startswith("$.b[1]:") and "fewer than 2" in e for e in errors)
    assert any(e.startswith("$.b[2]:") and "expected string" in e for e in errors)
    assert any(e.startswith("$.c:") for e in errors)
    assert any(e.startswith("$.d:") and "minimum" in e for e in errors)
    assert any("'e' is not allowed" in e for e in errors)
    assert validate(True, {"type": "number"}) != []  # a JSON boolean is not a number
    assert validate("x", False) != [] and validate("x", True) == []


def test_keywords_outside_the_subset_are_refused():
    with pytest.raises(ValueError, match="anyOf"):
        validate(1, {"anyOf": [{"type": "string"}]})
    assert validate(1, {"title": "t", "description": "d", "type": "integer"}) == []
