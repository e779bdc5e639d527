"""`rlhf doctor STAGE [the stage's flags | --config FILE]`: a preflight that catches the silent
failures of a long run before it starts (batch arithmetic, cut prompts and responses, tokenizer
round trip, PPO's ratio at learning rate 0, time and memory, exact resume). See `run`."""

from .checks import Check
from .run import STAGES, diagnose, run

__all__ = ["Check", "STAGES", "diagnose", "run"]
