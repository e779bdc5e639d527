"""The batch arithmetic of a run, spelled out: micro-batch, gradient accumulation, global batch,
tokens per optimiser step (measured on the data), steps per epoch and total steps.

The counts follow the stages' own rules: `rlhf.train.loop.BatchPlan` drops the remainder of each
epoch and `total_steps` divides by grad_accum; `rlhf ppo` takes `batch_size` prompts per rollout
step, samples each k times and makes `update_epochs * ceil(B*k / minibatch_size)` optimiser steps
of it; `rlhf dpo --online` trains each round on the pairs it labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .checks import FAIL, INFO, WARN, Check
from .lengths import Lengths, packed_rows


@dataclass(frozen=True)
class Arithmetic:
    checks: list[Check]
    total_steps: int  # steps the run will make (rollout steps for ppo, optimiser steps otherwise)
    step_word: str  # what one of those steps is, for the time estimate


def _steps_row(cfg, per_epoch: float, units_word: str, n: int, leftover: int, step_word: str = "steps",
               updates_per_step: int = 1) -> tuple[int, Check]:
    """Total steps from max_steps or epochs, the way `BatchPlan.total_steps` counts them; warns when
    the warm-up (counted in optimiser steps) is as long as the whole run."""
    total = cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(cfg.epochs * per_epoch))
    detail = (f"{per_epoch:g} {step_word} per epoch ({n} {units_word}, {leftover} left out of each epoch); "
              + (f"max_steps {total} = {total / max(per_epoch, 1e-9):.2f} epochs" if cfg.max_steps > 0
                 else f"{cfg.epochs:g} epoch{'' if cfg.epochs == 1 else 's'} = {total} {step_word}"))
    if updates_per_step > 1:
        detail += f" = {total * updates_per_step} optimiser steps"
    if cfg.warmup_steps >= total * updates_per_step:
        return total, Check("steps", WARN, detail + f"; warmup_steps {cfg.warmup_steps} >= optimiser steps: "
                                                    "the peak learning rate is never reached")
    return total, Check("steps", INFO, detail)


def _too_few(n: int, batch: int, unit: str) -> Check:
    return Check("batch", FAIL, f"only {n} {unit} for a micro-batch of {batch}: no step can be formed")


def offline(cfg, lengths: Lengths, sequences_per_unit: int = 1) -> Arithmetic:
    """sft, rm, dpo: `batch_size` units per micro-batch, `grad_accum` micro-batches per step."""
    n, unit = lengths.units, lengths.unit
    mean = lengths.mean_tokens
    if getattr(cfg, "packing", False) and unit == "examples":  # sft --packing: the unit is a packed row
        rows = packed_rows(lengths.tokens, cfg.max_length)
        n, unit = max(1, round(rows * lengths.units / max(1, lengths.profiled))), "packed rows"
        mean = sum(lengths.tokens) / max(1, rows)
    if n < cfg.batch_size:
        return Arithmetic([_too_few(n, cfg.batch_size, unit)], 0, "optimiser step")
    global_batch = cfg.batch_size * cfg.grad_accum
    sequences = f" ({global_batch * sequences_per_unit} sequences)" if sequences_per_unit > 1 else ""
    per_epoch = (n // cfg.batch_size) / cfg.grad_accum
    total, steps = _steps_row(cfg, per_epoch, unit, n, n % cfg.batch_size)
    checks = [
        Check("batch", INFO, f"micro-batch {cfg.batch_size} {unit} x grad_accum {cfg.grad_accum} = "
                             f"global batch {global_batch} {unit}{sequences}"),
        Check("tokens per step", INFO, f"{mean * global_batch:,.0f} tokens per optimiser step (mean {mean:.0f} per "
                                       f"{unit[:-1]}, measured on {lengths.profiled} {lengths.unit})"),
        steps,
    ]
    return Arithmetic(checks, total, "optimiser step")


def ppo(cfg, opts, lengths: Lengths, response_tokens: float | None) -> Arithmetic:
    """ppo/rloo/grpo/reinforce: B prompts x k samples per rollout step, then the update phase.
    `response_tokens`: mean sampled response length if measured, else max_new_tokens (an upper bound)."""
    n, B, k = lengths.units, cfg.batch_size, opts.k
    if n < B:
        return Arithmetic([_too_few(n, B, "prompts")], 0, "rollout step")
    rollout = B * k
    minibatch = min(opts.minibatch_size, rollout)
    minibatches = math.ceil(rollout / opts.minibatch_size)
    updates = opts.epochs * minibatches  # optimiser steps per rollout step, as `rlhf.train.ppo.run` counts them
    micro = math.ceil(minibatch / opts.grad_accum)
    batch = Check("batch", INFO, f"{B} prompts x {k} samples = {rollout} sequences per rollout step; minibatch "
                                 f"{minibatch} (micro-batch {micro} x grad_accum {opts.grad_accum}); update_epochs "
                                 f"{opts.epochs} x {minibatches} minibatches = {updates} optimiser steps per rollout step")
    ragged = [f"{rollout} sequences do not split into minibatches of {opts.minibatch_size}"] \
        if rollout % opts.minibatch_size else []
    ragged += [f"minibatch {minibatch} does not split into {opts.grad_accum} equal micro-batches"] \
        if minibatch % opts.grad_accum else []
    if ragged:
        batch = Check("batch", WARN, batch.detail + "; " + "; ".join(ragged) + " (the last one is smaller)")
    measured = response_tokens is not None
    response = response_tokens if measured else cfg.max_new_tokens
    per_sequence = lengths.mean_tokens + response
    tokens = Check("tokens per step", INFO,
                   f"{per_sequence * minibatch:,.0f} tokens per optimiser step ({minibatch} x (prompt "
                   f"{lengths.mean_tokens:.0f} + response {response:.0f} {'measured' if measured else 'at most'})); "
                   f"{per_sequence * rollout:,.0f} sampled per rollout step")
    total, steps = _steps_row(cfg, n // B, "prompts", n, n % B, "rollout steps", updates)
    return Arithmetic([batch, tokens, steps], total, "rollout step")


def online_dpo(cfg, lengths: Lengths) -> Arithmetic:
    """dpo --online: each round labels pairs from `prompts_per_round` prompts, then trains on them."""
    pairs = cfg.prompts_per_round * (cfg.samples_per_prompt // 2 if cfg.labeler == "oracle" else 1)
    if pairs < cfg.batch_size:
        return Arithmetic([_too_few(pairs, cfg.batch_size, "pairs per round")], 0, "optimiser step")
    global_batch = cfg.batch_size * cfg.grad_accum
    per_round = cfg.max_steps if cfg.max_steps > 0 else \
        max(1, math.ceil(cfg.epochs * (pairs // cfg.batch_size) / cfg.grad_accum))
    per_pair = 2 * lengths.mean_tokens + 2 * cfg.max_new_tokens
    checks = [
        Check("batch", INFO, f"{cfg.prompts_per_round} prompts x {cfg.samples_per_prompt} samples per round -> at most "
                             f"{pairs} pairs; micro-batch {cfg.batch_size} pairs x grad_accum {cfg.grad_accum} = "
                             f"global batch {global_batch} pairs ({2 * global_batch} sequences)"),
        Check("tokens per step", INFO, f"{per_pair * global_batch:,.0f} tokens per optimiser step at most "
                                       f"(prompt {lengths.mean_tokens:.0f} + response {cfg.max_new_tokens} at most, x2 per pair)"),
        Check("steps", WARN if cfg.warmup_steps >= per_round else INFO,
              f"{per_round} steps per round x {cfg.rounds} rounds = {per_round * cfg.rounds} steps"
              + (f"; warmup_steps {cfg.warmup_steps} >= steps per round (each round restarts its schedule)"
                 if cfg.warmup_steps >= per_round else "")),
    ]
    return Arithmetic(checks, per_round * cfg.rounds, "optimiser step (each round's sampling and labelling not counted)")
