"""Where a step's rows live under data parallelism (rlhf.runtime.dist), for samplers and trainers.

The global batch is `batch_size` prompts, each sampled k times. Its prompt j, with its k rows (a
whole group for RLOO and GRPO), lives on rank j % world as local prompt j // world: the stride of
rlhf.train.loop.BatchPlan.micro_batch. The sampling noise of a row is a function of (seed, step,
sampling round, global row) (`global_rows` with rlhf.rollout.generate.hashed_row_seeds), so the
same row draws the same response whatever the process count. With one process every function
here returns its input.

Shapes: B local rows (prompts x k, the k samples of a prompt consecutive).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..runtime import dist
from .experience import Sampled, concat_sampled, select_rows


def global_rows(n_local_rows: int, k: int) -> list[int]:
    """The global row index of each of this rank's `n_local_rows` rows (k rows per prompt)."""
    world, rank = dist.world_size(), dist.rank()
    return [((i // k) * world + rank) * k + i % k for i in range(n_local_rows)]


def global_mean(x: Tensor) -> float:
    """The mean of `x` (any shape) over every rank's entries."""
    count, total = dist.sum_all([float(x.numel()), float(x.double().sum())])
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
