"""Data parallelism of `rlhf ppo` (rlhf.runtime.dist): how one rollout step's global batch is
shared among the processes, and the statistics taken over all of them.

The global batch is `batch_size` prompts (loop.BatchPlan: a function of the step, not of the
process count), each sampled k times. Its prompt j, with its k rows (a whole group for RLOO and
GRPO), lives on rank j % world as local prompt j // world: BatchPlan.micro_batch's stride.
The sampling noise of a row is a function of (seed, step, sampling round, global row)
(rlhf.rollout.generate.hashed_row_seeds), so the same row draws the same response
whatever the process count. Means, the whitening of advantages and the KL the controller reads
are taken over the global batch, and the update's minibatches are chunks of one permutation of
the global rows, each rank taking the rows it holds (`local_rows`): with the token counts
summed over the ranks and the gradients summed (`dist.sum_gradients`), every update is the one
a single process makes, up to the order of floating-point sums.

Shapes: B local rows (prompts x k, the k samples of a prompt consecutive).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..eval.overopt import StepSample, step_sample
from ..runtime import dist
from .ppo_sampling import Sampled, concat_sampled, select_rows


def global_rows(n_local_rows: int, k: int) -> list[int]:
    """The global row index of each of this rank's `n_local_rows` rows (k rows per prompt)."""
    world, rank = dist.world_size(), dist.rank()
    return [((i // k) * world + rank) * k + i % k for i in range(n_local_rows)]


def local_rows(global_index: Tensor, k: int) -> Tensor:
    """The local indices of the rows among `global_index` (1-D long, global rows) that this rank
    holds, in their order there; every row alone."""
    world, rank = dist.world_size(), dist.rank()
    group = global_index // k
    mine = group % world == rank
    return (group[mine] // world) * k + global_index[mine] % k


def global_mean(x: Tensor) -> float:
    """The mean of `x` (any shape) over every rank's entries."""
    count, total = dist.sum_all([float(x.numel()), float(x.double().sum())])
    return total / max(count, 1.0)


def global_masked_mean(x: Tensor, mask: Tensor) -> float:
    """The mean of `x` (B, T) over the entries where `mask` is 1, on every rank."""
    keep = mask.bool()
    count, total = dist.sum_all([float(keep.sum()), float(torch.where(keep, x.double(), 0.0).sum())])
    return total / max(count, 1.0)


def gather_rows(values: list, k: int) -> list:
    """A per-row list (B,) of every rank, in global row order; the list itself alone."""
    if not dist.launched():
        return list(values)
    parts = dist.gather_objects(list(values))
    world, groups = len(parts), sum(len(p) for p in parts) // k
    return [row for j in range(groups) for row in parts[j % world][(j // world) * k : (j // world + 1) * k]]


def gather_sampled(local: Sampled, k: int, pad_id: int) -> Sampled:
    """The samples of every rank as one batch in global row order (dynamic sampling decides on
    the whole round); `local` itself alone."""
    if not dist.launched():
        return local
    device = local.score.device
    parts = dist.gather_objects(_on(local, torch.device("cpu")))
    pool = concat_sampled(parts, pad_id)
    world, offsets = len(parts), [0]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + part.score.shape[0])
    groups = pool.score.shape[0] // k
    order = [offsets[j % world] + (j // world) * k + s for j in range(groups) for s in range(k)]
    return _on(select_rows(pool, torch.tensor(order)), device)


def shard_sampled(batch: Sampled, k: int) -> Sampled:
    """This rank's groups of a global batch (group j on rank j % world); the batch itself alone."""
    if not dist.launched():
        return batch
    world, rank = dist.world_size(), dist.rank()
    rows = torch.arange(batch.score.shape[0])
    return select_rows(batch, rows[(rows // k) % world == rank].to(batch.score.device))


def _on(s: Sampled, device: torch.device) -> Sampled:
    r = s.rollout
    rollout = type(r)(*(t.to(device) for t in (r.prompt_ids, r.prompt_mask, r.response_ids, r.response_mask,
                                                r.logprobs, r.ended)))
    return Sampled(rollout, s.prompts, s.answers, s.responses, s.raw.to(device), s.score.to(device),
                   {n: torch.as_tensor(v).to(device) for n, v in s.parts.items()})


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
