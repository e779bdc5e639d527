"""What a reward returns: one float per response, plus the named parts it is made of."""

from __future__ import annotations

from typing import Iterable, Mapping


class Scores(list):
    """A list of floats (one per response) with `parts`: name -> one float per response.

    A scorer returning Scores is an ordinary scorer (a list of floats); `rlhf.rollout.scorers`
    also reads `parts`, and `rlhf ppo` logs the mean of each as `reward/<name>`."""

    def __init__(self, values: Iterable[float], parts: Mapping[str, Iterable[float]] | None = None):
        super().__init__(float(v) for v in values)
        self.parts = {str(name): [float(v) for v in vals] for name, vals in (parts or {}).items()}
        for name, vals in self.parts.items():
            if len(vals) != len(self):
                raise ValueError(f"part {name!r} has {len(vals)} values for {len(self)} responses")
