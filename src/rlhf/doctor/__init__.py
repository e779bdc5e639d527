"""`rlhf doctor STAGE [the stage's flags | --config FILE]`: a preflight that catches the silent
failures of a long run before it starts (batch arithmetic, cut prompts and responses, tokenizer
round trip, PPO's ratio at learning rate 0, time and memory, exact resume). See `run`.

`rlhf.doctor.inputs` holds the input checks every command makes before its stage is imported
(`rlhf.cli` runs them, and so does the doctor): they need no torch, so this package imports its
torch-heavy checks (`run`) only when they are asked for."""

from __future__ import annotations

__all__ = ["Check", "STAGES", "diagnose", "run"]


def __getattr__(name: str):
    if name == "Check":
        from .checks import Check

        return Check
    if name in ("STAGES", "diagnose", "run"):
        import importlib

        module = importlib.import_module(f"{__name__}.run")
        # importing the submodule `run` set this package's `run` to it: the function is meant
        globals().update(STAGES=module.STAGES, diagnose=module.diagnose, run=module.run)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
