"""The records of an RL step's rollout phase: what a sampler hands back (`Sampled`) and what the
trainer's update reads (`Experience`: the samples with the log-probs and values the trainer adds).

Shapes: B rows = prompts x k samples (the k samples of a prompt consecutive), P prompt tokens
(left-padded), T response tokens (right-padded).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..data.records import Rollout


@dataclass
class Sampled:
    """Scored samples: what a `rlhf.rollout.sampler.Sampler` returns for one step's prompts."""

    rollout: Rollout  # (B, P) prompts, (B, T) responses and loss mask, sampler log-probs (B, T), ended (B,)
    prompts: list  # (B,) the prompt of each row (text or conversation)
    answers: list  # (B,) the row's reference answer (str) or None
    responses: list[str]  # (B,) decoded responses
    raw: Tensor  # (B,) the reward as scored (a scorer's output, an environment's return)
    score: Tensor  # (B,) the shaped sequence reward the advantages start from
    parts: dict[str, Tensor] = field(default_factory=dict)  # name -> (B,) the reward's named parts, raw
    stats: dict[str, float] = field(default_factory=dict)  # the sampler's own figures of the step, over every rank
    details: list[dict] | None = None  # (B,) per-row extras for samples.jsonl (an episode's turns), JSON-ready


@dataclass
class Experience:
    """What one rollout phase hands to the update phase."""

    rollout: Rollout  # tokens (B, P+T), masks, sampler log-probs (B, T), ended (B,)
    old_logp: Tensor | None  # (B, T) log pi_old, recomputed by the training forward (same numerics as the update);
    # None when the update is a single optimiser step: its own forward is then pi_old, and fills this in
    ref_logp: Tensor  # (B, T) log pi_ref
    values: Tensor | None  # (B, T) V(s_t) of the critic at rollout time; None without a critic
    score: Tensor  # (B,) the sequence reward: normalised, clipped, EOS-penalised scorer output
    entropy: Tensor | None  # (B, T) entropy of pi_old at each response position (filled like old_logp)
    prompts: list | None = None  # (B,) the prompt of each row, where the caller keeps them (samples.jsonl)

    @property
    def mask(self) -> Tensor:
        return self.rollout.response_mask

    def rows(self, index: Tensor) -> "Experience":
        """The sub-batch of rows `index` (a minibatch); the rollout keeps its kind (`Rollout.rows`)."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        prompts = None if self.prompts is None else [self.prompts[i] for i in index.tolist()]
        return Experience(self.rollout.rows(index), pick(self.old_logp), self.ref_logp[index], pick(self.values),
                          self.score[index], pick(self.entropy), prompts)


# ---------------------------------------------------------------- rows of samples


def _pad(t: Tensor, width: int, value, left: bool) -> Tensor:
    pad = torch.full((t.shape[0], width - t.shape[1]), value, dtype=t.dtype, device=t.device)
    return torch.cat([pad, t] if left else [t, pad], dim=1)


def concat_rollouts(rollouts: list[Rollout], pad_id: int) -> Rollout:
    """Rollouts of several sampling rounds as one: prompts left-padded and responses right-padded to
    the widest (the forward passes count positions over real tokens only, so padding changes nothing)."""
    p = max(r.prompt_ids.shape[1] for r in rollouts)
    t = max(r.response_ids.shape[1] for r in rollouts)
    return Rollout(
        torch.cat([_pad(r.prompt_ids, p, pad_id, left=True) for r in rollouts]),
        torch.cat([_pad(r.prompt_mask, p, 0, left=True) for r in rollouts]),
        torch.cat([_pad(r.response_ids, t, pad_id, left=False) for r in rollouts]),
        torch.cat([_pad(r.response_mask, t, 0, left=False) for r in rollouts]),
        torch.cat([_pad(r.logprobs, t, 0.0, left=False) for r in rollouts]),
        torch.cat([r.ended for r in rollouts]),
    )


def concat_sampled(rounds: list[Sampled], pad_id: int) -> Sampled:
    """The samples of several rounds as one batch, in order (the parts every round has)."""
    if len(rounds) == 1:
        return rounds[0]
    names = set.intersection(*(set(s.parts) for s in rounds))
    return Sampled(concat_rollouts([s.rollout for s in rounds], pad_id), [p for s in rounds for p in s.prompts],
                   [a for s in rounds for a in s.answers], [r for s in rounds for r in s.responses],
                   torch.cat([s.raw for s in rounds]), torch.cat([s.score for s in rounds]),
                   {n: torch.cat([s.parts[n] for s in rounds]) for n in sorted(names)})


def select_rows(s: Sampled, index: Tensor) -> Sampled:
    """The rows `index` (1-D long) of `s`."""
    rows = index.tolist()
    return Sampled(s.rollout.rows(index), [s.prompts[i] for i in rows], [s.answers[i] for i in rows],
                   [s.responses[i] for i in rows], s.raw[index], s.score[index],
                   {n: v[index] for n, v in s.parts.items()},
                   details=None if s.details is None else [s.details[i] for i in rows])
