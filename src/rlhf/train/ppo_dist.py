"""Data parallelism of `rlhf ppo` (rlhf.runtime.dist): the statistics and the update's rows over
every process. Where a step's rows live, and how a sampler gathers and shares them out, is
rlhf.rollout.shard's.

The global batch is `batch_size` prompts (loop.BatchPlan: a function of the step, not of the
process count), each sampled k times; its prompt j lives on rank j % world. Means, the whitening
of advantages and the KL the controller reads are taken over the global batch, and the update's
minibatches are chunks of one permutation of the global rows, each rank taking the rows it holds
(`local_rows`): with the token counts summed over the ranks and the gradients summed
(`dist.sum_gradients`), every update is the one a single process makes, up to the order of
floating-point sums.

Shapes: B local rows (prompts x k, the k samples of a prompt consecutive).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..eval.overopt import StepSample, step_sample
from ..rollout.shard import gather_rows, global_mean  # noqa: F401  (global_mean: ppo_update reads it from here)
from ..runtime import dist


def local_rows(global_index: Tensor, k: int) -> Tensor:
    """The local indices of the rows among `global_index` (1-D long, global rows) that this rank
    holds, in their order there; every row alone."""
    world, rank = dist.world_size(), dist.rank()
    group = global_index // k
    mine = group % world == rank
    return (group[mine] // world) * k + global_index[mine] % k


def most_micro_batches(global_index: Tensor, k: int, grad_accum: int) -> int:
    """The most micro-batches any rank splits its rows among `global_index` (1-D long, global
    rows) into, `grad_accum` at most each: what every rank runs when each forward is a collective
    (a sharded model). Known to every rank without a message: row r lives on rank r // k % world."""
    world = dist.world_size()
    held = torch.bincount(global_index // k % world, minlength=world).tolist()
    return max(-(-n // -(-n // grad_accum)) if n else 0 for n in held)


def global_masked_mean(x: Tensor, mask: Tensor) -> float:
    """The mean of `x` (B, T) over the entries where `mask` is 1, on every rank."""
    keep = mask.bool()
    count, total = dist.sum_all([float(keep.sum()), float(torch.where(keep, x.double(), 0.0).sum())])
    return total / max(count, 1.0)


def global_step_sample(responses: list[str], exp, reward_stats: dict, k: int) -> StepSample:
    """A PPO step's StepSample for the over-optimisation guard (rlhf.train.guard_overopt) over every
    rank's rows, so that each rank's guard decides alike: the score the policy optimises
    (exp.score, (B,)), lengths from the response mask (B, T), whether each reached EOS
    (exp.rollout.ended, (B,)), and from the step's reward stats the ensemble's `reward_std` and
    the `gold` mean where they are logged. exp: this rank's Experience."""
    rows = gather_rows(list(zip(responses, exp.score.tolist(), exp.mask.sum(1).tolist(), exp.rollout.ended.tolist())), k)
    texts, scores, lengths, ended = (list(column) for column in zip(*rows))
    return step_sample(texts, scores, lengths, ended, disagreement=reward_stats.get("reward_std"),
                       gold=reward_stats.get("gold"))
