"""Field values from a YAML file, typed and checked exactly as the command-line flags are; and
the fields a command cannot run without.

PyYAML types what it reads by YAML's own rules (`1e-4`, without a dot, is a string; `yes` is a
bool), not by the config's. So each value is written back as the text a flag would carry and
parsed by tyro's constructor for the field's annotation, the same code that parses the flag:
`lr: 1e-4` becomes the float 0.0001, `precision: fp16` is refused with the allowed values,
`batch_size: 2.5` and `resume: 1` are refused, `null` is accepted only by optional fields.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any


def field_types(cls) -> dict[str, Any]:
    """Field name -> its resolved annotation (the config modules use `from __future__ import annotations`)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _flag_text(value: Any) -> str:
    """The text a flag would carry for one YAML scalar."""
    if isinstance(value, (dict, list, tuple)):
        raise ValueError(f"{value!r} is not a single value")
    return str(value)


def coerce(value: Any, annotation: Any) -> Any:
    """`value` (as PyYAML read it) turned into `annotation`'s type, or ValueError saying why not."""
    import tyro.constructors as constructors

    spec = constructors.ConstructorRegistry.get_primitive_spec(constructors.PrimitiveTypeInfo.make(annotation, set()))
    if isinstance(spec, constructors.UnsupportedTypeAnnotationError):  # no flag for it either: nothing to mirror
        return value
    if isinstance(value, dict):
        raise ValueError("a mapping is not a value of this field")
    if value is None:
        if type(None) not in typing.get_args(annotation):
            raise ValueError("null is not allowed: the field is not optional")
        return None
    texts = [_flag_text(v) for v in value] if isinstance(value, (list, tuple)) else [_flag_text(value)]
    if isinstance(spec.nargs, int) and len(texts) != spec.nargs:
        raise ValueError(f"expected {spec.nargs} value(s) ({spec.metavar}), got {value!r}")
    if spec.nargs == "+" and not texts:
        raise ValueError(f"expected at least one value ({spec.metavar})")
    if spec.choices is not None and any(t not in spec.choices for t in texts):
        raise ValueError(f"{value!r} is not one of {', '.join(spec.choices)}")
    try:
        return spec.instance_from_str(texts)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{value!r} is not a valid {spec.metavar} ({err})") from None


def missing_required(cfg) -> list[str]:
    """The fields of `cfg` that its command needs (its class's REQUIRED) and that are still unset."""
    return [name for name in getattr(type(cfg), "REQUIRED", ()) if getattr(cfg, name) is None]
