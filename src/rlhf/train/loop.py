"""The supervised training loop every offline stage shares: a deterministic batch plan, AdamW
with warm-up and cosine decay, gradient accumulation and clipping, metrics, progress, and
exact resume from the run's checkpoints (rlhf.runtime).

`fit` runs the common supervised loop (pretrain, SFT, reward model, DPO); stages with their
own loop (PPO) reuse the smaller pieces.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import torch

from ..config import TrainConfig
from ..data.batches import check_batch
from ..runtime import dist
from ..runtime import Runtime, autocast, record_step, to_device
from ..runtime.guard import NonFiniteGuard, advance_schedulers

# ---------------------------------------------------------------- data order


class BatchPlan:
    """Which examples form micro-batch i, as a pure function of (seed, i).

    Each epoch is a fresh seeded permutation, cut into full micro-batches (the remainder of an
    epoch is dropped, so every optimiser step sees the same number of examples). With `lengths`,
    the permutation is cut into windows of `GROUP_WINDOW` batches, each window is sorted by
    length and cut into batches, and the batches are shuffled: batches of similar lengths waste
    little padding while the order stays random (like `group_by_length` in transformers).
    Because the plan is a function of the micro-batch index, the data position of a checkpoint
    is just the step counter, and resuming replays exactly the batches an uninterrupted run sees.

    `batch_size` is the global micro-batch: with several processes (`rlhf.runtime.dist`) each
    rank takes every world-th example of it (`micro_batch`), so the examples of a step, and
    hence the update, do not depend on the number of processes, and a checkpoint resumes with
    any number of them.
    """

    GROUP_WINDOW = 32

    def __init__(self, n_examples: int, batch_size: int, seed: int, lengths: list[int] | None = None):
        self.rank, self.world = dist.rank(), dist.world_size()
        check_batch(n_examples, batch_size, self.world)  # the stages check first, naming their data (rlhf.data.batches)
        self.n, self.batch_size, self.seed, self.lengths = n_examples, batch_size, seed, lengths
        self.per_epoch = n_examples // batch_size
        self._epoch: tuple[int, list[list[int]]] | None = None

    def _batches(self, epoch: int) -> list[list[int]]:
        if self._epoch is None or self._epoch[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(self.n, generator=g).tolist()[: self.per_epoch * self.batch_size]
            if self.lengths is not None:
                window = self.GROUP_WINDOW * self.batch_size
                order = [i for w in range(0, len(order), window)
                         for i in sorted(order[w : w + window], key=lambda j: -self.lengths[j])]
            batches = [order[j : j + self.batch_size] for j in range(0, len(order), self.batch_size)]
            if self.lengths is not None:
                batches = [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]
            self._epoch = (epoch, batches)
        return self._epoch[1]

    def global_micro_batch(self, i: int) -> list[int]:
        """The examples of micro-batch i over all ranks."""
        epoch, j = divmod(i, self.per_epoch)
        return self._batches(epoch)[j]

    def micro_batch(self, i: int) -> list[int]:
        """This rank's examples of micro-batch i (strided: length-sorted batches stay balanced)."""
        return self.global_micro_batch(i)[self.rank :: self.world]

    def total_steps(self, cfg: TrainConfig) -> int:
        if cfg.max_steps > 0:
            return cfg.max_steps
        return max(1, math.ceil(cfg.epochs * self.per_epoch / cfg.grad_accum))


# ---------------------------------------------------------------- optimisation


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay only on matrices (not on norms, biases or gains)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates all tensors in one pass: on CPU about twice as fast as the loop.
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)


def make_scheduler(optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float):
    """Linear warm-up to the peak, then cosine decay to `min_lr_ratio` of it."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------- the supervised loop


@dataclasses.dataclass
class FitResult:
    steps: int
    tokens: int
    wall_s: float
    tokens_per_s: float
    last_metrics: dict
    skipped_steps: int = 0  # optimiser steps skipped for a non-finite loss or gradient norm


LossFn = Callable[[torch.nn.Module, dict], "tuple[torch.Tensor, dict]"]


def fit(
    rt: Runtime,
    model: torch.nn.Module,
    batch_at: Callable[[int], dict],
    plan: BatchPlan,
    loss_fn: LossFn,
    evaluate: Callable[[], dict] | None = None,
    forward_model: torch.nn.Module | None = None,
    desc: str = "train",
    weight_average=None,
) -> FitResult:
    """Train `model` on micro-batches `batch_at(i)` (i from `plan`) until the planned step count.

    Each batch carries `n_units` (the tokens or examples its loss sums over) and `n_tokens`
    (tokens processed, for throughput). `loss_fn(model, batch) -> (loss_sum, stats)` returns
    the loss summed over the batch's units; the loop divides by the units of the whole
    accumulation group, so G accumulated micro-batches give exactly the gradient of one batch
    G times larger, whatever the padding.
    With several processes each rank computes its share of every micro-batch (see BatchPlan);
    the units are counted over all ranks and the gradients summed over them
    (`rlhf.runtime.dist`), so the update, the logged loss and the checkpoints are those of one
    process up to summation order. Rank 0 alone logs and writes checkpoints; every rank runs
    `evaluate` (they agree: same weights, same data, same random state).
    `forward_model` (e.g. a torch.compile'd wrapper) is what `loss_fn` receives; parameters,
    optimiser and checkpoints always belong to `model`. `rt` (rlhf.runtime.Runtime) holds the
    config, the device and the run directory, prepares the model and writes the checkpoints.
    `weight_average` (rlhf.train.weight_average.TailAverage) sees the weights after every step
    and is checkpointed with them; the caller applies it at the end.
    """
    from tqdm.auto import tqdm

    cfg, device, run = rt.cfg, rt.device, rt.run_dir
    forward_model = model if forward_model is None else forward_model
    total_steps = plan.total_steps(cfg)
    # replicas start equal, whatever drew their random parts; a sharding wrapper replaces the
    # parameters in place, so the optimiser is built after it
    rt.prepare(model)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg.warmup_steps, total_steps, cfg.min_lr_ratio)
    trainable = [p for p in model.parameters() if p.requires_grad]
    guard = NonFiniteGuard(cfg.max_bad_steps)
    # the checkpoint's model and guard: the same model (and LoRA adapter) that saved it, and the
    # skipped steps counted over the whole run
    resumed = rt.resume(model=model, optimizer=optimizer, scheduler=scheduler, guard=guard,
                        weight_average=weight_average)
    start_step = resumed.step if resumed else 0
    tokens_seen = resumed.get("tokens", 0) if resumed else 0
    wall_before = resumed.get("wall_s", 0.0) if resumed else 0.0

    def checkpoint(step: int, wall: float) -> None:
        rt.checkpoint(step, model=model, optimizer=optimizer, scheduler=scheduler, guard=guard, tokens=tokens_seen,
                      wall_s=wall, weight_average=weight_average)

    model.train()
    t0 = time.perf_counter() - wall_before
    window_t, window_tokens = time.perf_counter(), 0
    last: dict = {}
    bar = tqdm(total=total_steps, initial=start_step, desc=desc, disable=not (cfg.progress and dist.is_main()),
               dynamic_ncols=True)
    for step in range(start_step, total_steps):
        record_step(step)  # steps finished, for the Ctrl-C message
        batches = [batch_at(step * cfg.grad_accum + k) for k in range(cfg.grad_accum)]
        group_count = dist.global_count(sum(b["n_units"] for b in batches))  # over all ranks: per-token means stay global
        loss_total, stats_total = 0.0, {}
        for batch in batches:
            batch = to_device(batch, device)
            with autocast(cfg.precision, device):
                loss_sum, stats = loss_fn(forward_model, batch)
            (loss_sum / group_count).backward()
            loss_total += loss_sum.item()
            for key, value in stats.items():
                stats_total[key] = stats_total.get(key, 0.0) + float(value) / len(batches)
        rt.reduce_gradients(trainable)
        loss_total, step_tokens = dist.sum_all([loss_total, sum(b["n_tokens"] for b in batches)])
        step_tokens = int(step_tokens)
        grad_norm = rt.clip_gradients(trainable, cfg.max_grad_norm)
        done = step + 1
        if guard.check(done, loss=loss_total, grad_norm=grad_norm):
            optimizer.step()
            scheduler.step()
        else:  # NaN/inf must not reach the weights; the data and the schedule still move on with the step
            advance_schedulers([scheduler])
        optimizer.zero_grad(set_to_none=True)
        record_step(done)  # the weights now hold `done` steps, whatever comes next (logging, a checkpoint)
        if weight_average is not None:
            weight_average.update(model, done)
        tokens_seen += step_tokens
        window_tokens += step_tokens
        bar.update(1)

        is_eval = evaluate is not None and cfg.eval_every > 0 and done % cfg.eval_every == 0 and done < total_steps
        if done % cfg.log_every == 0 or done == total_steps or is_eval:
            now = time.perf_counter()
            last = {
                "step": done,
                "loss": loss_total / group_count,
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                "tokens_per_s": window_tokens / max(now - window_t, 1e-9),
                "elapsed_s": now - t0,
                "tokens": tokens_seen,
                "skipped_steps": guard.skipped,
            }
            last.update(dist.mean_all(stats_total))  # every rank logs or none: the same step counter
            if is_eval:
                model.eval()
                last.update(evaluate())
                model.train()
            run.log(last)
            bar.set_postfix(loss=f"{last['loss']:.3f}")
            window_t, window_tokens = time.perf_counter(), 0
        if cfg.save_every > 0 and done % cfg.save_every == 0 and done < total_steps:
            checkpoint(done, time.perf_counter() - t0)
        if rt.should_stop():  # a Python callback asked (rlhf.runtime.callbacks): end as a finished run does
            total_steps = done
            break
    bar.close()
    wall = time.perf_counter() - t0
    model.eval()
    return FitResult(steps=total_steps, tokens=tokens_seen, wall_s=wall, tokens_per_s=tokens_seen / max(wall, 1e-9),
                     last_metrics=last, skipped_steps=guard.skipped)
