"""The one seam between an RL trainer and whatever samples for it.

    sampler = KVCacheSampler(tokenizer, scorer, cfg, k=4, pool=prompts)   # or MultiTurnSampler(...), ...
    sampled = sampler.sample(policy, prompts, step)                        # Sampled: tokens, masks, log-probs, rewards
    rt.checkpoint(step, sampler=sampler, ...)                              # its state, if it has any

A sampler takes this rank's prompts of a step (with their reference answers) and the current
policy, and returns `k` scored samples of each (`rlhf.rollout.experience.Sampled`): the token ids
and masks, its own log-probs, the raw and shaped rewards, the decoded responses and each row's
prompt, plus its own figures for metrics.jsonl. The trainer adds the log-probs of its own
forward, the reference's and the critic's values, and never asks which sampler it has.

Implementations: the built-in KV cache with a reward scorer (`rlhf.rollout.kv_sampler`), the same
scoring around an in-process vLLM engine synced to the policy each step
(`rlhf.rollout.vllm_sampler`, `--rollout-engine vllm`), multi-turn episodes against an environment
(`rlhf.rollout.multiturn.MultiTurnSampler`), and a sampler run ahead of the learner in a worker
process (`rlhf.rollout.async_sampler`, `--async-staleness K`). A
sampler that keeps state across steps (an engine's weight version, an asynchronous queue) returns
it from `state_dict` so that a resumed run continues where it stopped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..data.records import Prompt
from .experience import Sampled


class Sampler(ABC):
    """Prompts in, scored samples out (see the module docstring).

    k: rows per prompt, consecutive in the returned batch (a group for RLOO and GRPO).
    scorer: the (prompt, response) scorer it rewards with, if any (`rlhf.rollout.scorers.Scorer`;
    the trainer's evaluation judges with it when there is no gold); None when, say, an environment
    rewards."""

    k: int
    scorer = None

    @abstractmethod
    def sample(self, policy, prompts: list[Prompt], step: int) -> Sampled:
        """`k` responses to each of `prompts` (this rank's share of the step) from `policy` (the
        weights as they are now), scored. Rows: (len(prompts) * k,), the k of a prompt together;
        `Sampled.stats` are over every rank. `step` seeds the sampling noise (a resumed run draws
        the same samples)."""

    def state_dict(self) -> dict:
        """What a resumed run needs to continue this sampler (nothing, by default)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`'s state."""

    def summary(self) -> dict:
        """What the run's summary.json says of the sampler."""
        return {"sampler": type(self).__name__}
