"""A small subset of JSON Schema (draft 2020-12) for `json_schema` rewards, written here because
the `jsonschema` package is not a dependency of the toolkit.

Checked keywords: type (one name or a list; integer accepts 3.0 as JSON Schema does), enum,
const, properties, required, additionalProperties (true, false or a schema), items (one schema
for every element), minItems, maxItems, minLength, maxLength, pattern (re.search), minimum,
maximum, exclusiveMinimum, exclusiveMaximum. Annotations ($schema, $id, title, description,
default, examples) are ignored. Any other keyword ($ref, anyOf, oneOf, format, ...) is refused
with an error naming it, rather than silently left unchecked.
"""

from __future__ import annotations

import re
from typing import Any

ANNOTATIONS = {"$schema", "$id", "title", "description", "default", "examples", "$comment"}
CHECKED = {"type", "enum", "const", "properties", "required", "additionalProperties", "items", "minItems",
           "maxItems", "minLength", "maxLength", "pattern", "minimum", "maximum", "exclusiveMinimum",
           "exclusiveMaximum"}


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
    python = {"string": str, "number": (int, float), "boolean": bool, "object": dict, "array": list,
              "null": type(None)}
    if name not in python:
        raise ValueError(f"unknown JSON Schema type {name!r}")
    if name == "number" and isinstance(value, bool):  # True is an int in Python, not a number in JSON
        return False
    return isinstance(value, python[name])


def validate(instance: Any, schema: dict | bool, path: str = "$") -> list[str]:
    """The ways `instance` (parsed JSON) breaks `schema`, as messages naming the place ($.a[0]);
    an empty list when it conforms. A keyword outside the subset raises ValueError."""
    if schema is True or schema == {}:
        return []
    if schema is False:
        return [f"{path}: no value is allowed here"]
    if not isinstance(schema, dict):
        raise ValueError(f"a schema must be an object or a boolean, got {type(schema).__name__}")
    unknown = set(schema) - CHECKED - ANNOTATIONS
    if unknown:
        raise ValueError(f"JSON Schema keyword(s) {sorted(unknown)} are outside the subset rlhf.rewards.schema checks")
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(instance, n) for n in names):
            return [f"{path}: expected {' or '.join(names)}, got {type(instance).__name__}"]
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} is not one of {schema['enum']}")
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{path}: {instance!r} is not {schema['const']!r}")
    if isinstance(instance, dict):
        errors += _object(instance, schema, path)
    if isinstance(instance, list):
        if "items" in schema:
            for i, item in enumerate(instance):
                errors += validate(item, schema["items"], f"{path}[{i}]")
        errors += _bounds(len(instance), schema, "minItems", "maxItems", path, "items")
    if isinstance(instance, str):
        errors += _bounds(len(instance), schema, "minLength", "maxLength", path, "characters")
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            errors.append(f"{path}: {instance!r} does not match {schema['pattern']!r}")
    if isinstance(instance, (int, float)) and not isinstance(instance, bool):
        errors += _numeric(instance, schema, path)
    return errors


def _object(instance: dict, schema: dict, path: str) -> list[str]:
    errors = [f"{path}: missing required property {name!r}" for name in schema.get("required", [])
              if name not in instance]
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, value in instance.items():
        if name in properties:
            errors += validate(value, properties[name], f"{path}.{name}")
        elif extra is False:
            errors.append(f"{path}: property {name!r} is not allowed")
        elif isinstance(extra, dict):
            errors += validate(value, extra, f"{path}.{name}")
    return errors


def _bounds(size: int, schema: dict, low: str, high: str, path: str, unit: str) -> list[str]:
    errors = []
    if low in schema and size < schema[low]:
        errors.append(f"{path}: {size} {unit}, fewer than {schema[low]}")
    if high in schema and size > schema[high]:
        errors.append(f"{path}: {size} {unit}, more than {schema[high]}")
    return errors


def _numeric(value: float, schema: dict, path: str) -> list[str]:
    checks = {"minimum": value >= schema.get("minimum", value), "maximum": value <= schema.get("maximum", value),
              "exclusiveMinimum": "exclusiveMinimum" not in schema or value > schema["exclusiveMinimum"],
              "exclusiveMaximum": "exclusiveMaximum" not in schema or value < schema["exclusiveMaximum"]}
    return [f"{path}: {value} breaks {name} {schema[name]}" for name, ok in checks.items() if not ok]
