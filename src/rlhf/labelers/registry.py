"""Labelers by name: what `--label NAME` (`rlhf generate`) and `--labeler NAME` (`rlhf dpo --online`)
look up before they treat the name as a scorer.

A package above this layer registers its own labelers when it is imported: `rlhf.demo` registers
its scripted oracle as `oracle`. Nothing here names that package; `rlhf.cli` imports the packages
that register (its PLUGINS) before it runs a command, as a program using the Python API imports
`rlhf.demo` itself. The name is then found without an import running up the layers.

Imports nothing heavy: `rlhf.cli` reads it before any command, the torch-free ones included.
"""

from __future__ import annotations

from typing import Callable

# name -> factory taking (temperature, seed) and returning an object with
# prefer(prompts, a, b) -> [0 | 1 | None (a tie)]
LABELERS: dict[str, Callable] = {}


def register_labeler(name: str, factory: Callable) -> None:
    """Make `name` a labeler: `factory(temperature, seed)` builds it (registering a name again replaces it)."""
    if not name or ":" in name:
        raise ValueError(f"a labeler name is a plain word (`prefix:SPEC` are scorers and judges), got {name!r}")
    LABELERS[name] = factory


def is_registered(name: str) -> bool:
    return name in LABELERS


def build_labeler(name: str, temperature: float, seed: int):
    """The labeler registered as `name`, built with its noise temperature and seed."""
    if name not in LABELERS:
        known = ", ".join(sorted(LABELERS)) or "none"
        raise ValueError(f"no labeler named {name!r} (registered: {known}); the demo's `oracle` is registered "
                         f"by importing rlhf.demo, which rlhf.cli does")
    return LABELERS[name](temperature, seed)
