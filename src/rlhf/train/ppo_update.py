"""The pieces of `rlhf ppo` between the sampler and the optimiser: the experience of one rollout
phase, the algorithm's advantages and policy loss, and the update phase.

Shapes: B sequences (prompts x k samples, the k samples of a prompt consecutive), P prompt
tokens (left-padded), T response tokens (right-padded), V vocabulary.

The algorithms (the registry rlhf.config.algorithms, one record each) differ in their advantage
estimator (rlhf.algos.ADVANTAGE_ESTIMATORS), their per-token policy loss (rlhf.algos.POLICY_LOSSES)
and the options of the loss (Options: ratio level, asymmetric clip, aggregation, truncated
responses masked out, entropy bonus), all read here by name. Everything else is shared.

Under a launcher every rank holds its share of the batch (rlhf.train.ppo_dist): the batch-wide
statistics (whitening, REINFORCE's baseline, REINFORCE++'s normalisation, the logged figures)
are summed over the ranks (`dist.sum_tensor`, passed to the estimators as their `sum_across`),
and so are the gradients (the runtime's `reduce_gradients`, a no-op for a sharded model, whose
backward has summed them) and the token counts each loss is divided by. Under sharding every
forward is a collective, so each rank runs as many micro-batches as the busiest rank, an idle
one on one of its rows with weight 0.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import Tensor

from ..algos import (
    IS_CORRECTIONS,
    is_correction_stats,
    ADVANTAGE_ESTIMATORS,
    LOG_RATIOS,
    LOSS_AGGREGATIONS,
    POLICY_LOSSES,
    EstimatorSettings,
    aggregation_units,
    entropy_from_logits,
    explained_variance,
    kl_estimate,
    masked_mean,
    ppo_value_loss,
    token_logprobs,
    truncation_mask,
)
from ..config.algorithms import ALGORITHMS as REGISTRY, Algo
from ..data.records import Rollout
from ..rollout.experience import Experience  # the record between sampler and update (here for older imports)
from ..rollout.logprobs import response_logits, response_logprobs
from ..runtime import dist
from ..runtime.guard import NonFiniteGuard, advance_schedulers
from .critic import response_values
from .ppo_dist import global_masked_mean, global_mean, local_rows, most_micro_batches


# ---------------------------------------------------------------- forward passes


def values_of(critic, rollout: Rollout) -> Tensor:
    """V(s_t) (B, T) fp32 from the critic, 0 on padding."""
    return response_values(critic, rollout.tokens, rollout.attention_mask, rollout.prompt_ids.shape[1]) \
        * rollout.response_mask


def logprobs_and_entropy(actor, rollout: Rollout, temperature: float) -> tuple[Tensor, Tensor]:
    """log pi (B, T) and the entropy of pi (B, T) at each response position, both with grad (the
    entropy bonus); the same numerics as `response_logprobs`, so log pi_old from it matches."""
    logits = response_logits(actor, rollout, temperature)
    chunk = max(1, logits.shape[0] // 4)
    mask = rollout.response_mask
    return (token_logprobs(logits, rollout.response_ids, chunk_size=chunk) * mask,
            entropy_from_logits(logits, chunk_size=chunk) * mask)


# ---------------------------------------------------------------- advantages and policy loss


def advantages_of(exp: Experience, kl: Tensor | None, kl_coef: float, opts) -> tuple[Tensor, Tensor | None]:
    """The algorithm's advantages (B, T) and, for GAE, the critic's returns (B, T): the estimator
    `opts.advantage` of rlhf.algos.ADVANTAGE_ESTIMATORS on this experience, with kl_coef * KL_t (B, T)
    taken out of the reward when the KL is in it (`kl` may be None otherwise), batch-wide
    statistics over every rank's rows."""
    penalty = kl_coef * kl if opts.kl_in_reward else torch.zeros_like(exp.mask, dtype=exp.score.dtype)
    settings = EstimatorSettings(k=opts.k, gamma=opts.gamma, lam=opts.lam, whiten=opts.whiten_advantages,
                                 scale_by_std=opts.grpo_scale_by_std)
    return ADVANTAGE_ESTIMATORS[opts.advantage](exp.score, penalty, exp.mask, exp.values, settings,
                                                sum_across=dist.sum_tensor)


class Algorithm(Algo):
    """A record of the registry (rlhf.config.algorithms.Algo) as the stage and the tools built on it
    (rlhf.doctor, rlhf.demo.calculator, rlhf.iterate) read it: the record's fields, and
    `advantages(exp, kl, kl_coef, opts)` (advantages_of)."""

    advantages = staticmethod(advantages_of)


# The registry's records with their advantages bound: derived from it, nothing to edit here.
ALGORITHMS: dict[str, Algorithm] = {name: Algorithm(**dataclasses.asdict(spec)) for name, spec in REGISTRY.items()}


def policy_loss_of(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, opts,
                   sampler_logp: Tensor | None = None) -> tuple[Tensor, dict]:
    """The policy loss of one micro-batch as `opts` assembles it: the importance ratio (per token or
    per sequence), the per-token loss `opts.policy_loss` of rlhf.algos.POLICY_LOSSES with its
    low/high/dual clips, weighted by the truncated importance-sampling correction for the
    sampler's own log-probs `sampler_logp` (B, T) where `opts.tis_cap` > 0 (rlhf.algos.importance),
    aggregated by `opts.loss_agg` over `mask` (B, T).
    Returns (loss, detached stats: the loss's own (clipfrac, ...), ratio_mean, approx_kl)."""
    log_ratio = LOG_RATIOS[opts.ratio_level](logp, old_logp, mask)
    per_token, stats = POLICY_LOSSES[opts.policy_loss](log_ratio, logp, advantages, mask, opts.clip, opts.clip_high,
                                                       opts.dual_clip)
    if opts.tis_cap > 0 and sampler_logp is not None:  # the samples came from pi_sampler, not quite pi_old
        per_token = per_token * IS_CORRECTIONS[opts.tis_level](old_logp, sampler_logp, mask, opts.tis_cap)
    with torch.no_grad():  # how far the policy moved from the rollout's, per token, whatever the ratio level
        token_ratio = logp - old_logp
        stats["approx_kl"] = masked_mean(torch.expm1(token_ratio) - token_ratio, mask)
        stats.setdefault("ratio_mean", masked_mean(token_ratio.exp(), mask))
    return LOSS_AGGREGATIONS[opts.loss_agg](per_token, mask, opts.max_new_tokens), stats


# ---------------------------------------------------------------- update phase


def _chunks(index: Tensor, size: int) -> list[Tensor]:
    return [index[i : i + size] for i in range(0, len(index), size)]


def loss_mask_of(exp: Experience, opts) -> Tensor:
    """(B, T) the tokens the policy loss covers: the response tokens, without the responses that
    never reached EOS under --mask-truncated."""
    return truncation_mask(exp.mask, exp.rollout.ended) if opts.mask_truncated else exp.mask


def update(actor, critic, exp: Experience, advantages: Tensor | Callable, returns: Tensor | None, kl_coef: float,
           actor_opt, critic_opt, schedulers: list, opts, autocast, generator: torch.Generator,
           guard: NonFiniteGuard | None = None, step: int = 0, rt=None) -> tuple:
    """K epochs of minibatch steps over one experience; returns (mean stats as floats, advantages,
    returns).

    `advantages` may instead be a function of the experience returning (advantages, returns): it is
    called once the first forward has filled in log pi_old, which must then cover every row (one
    optimiser step over one micro-batch; see `rlhf.train.ppo.single_forward_update`).

    Each minibatch of `opts.minibatch_size` sequences is one optimiser step, accumulated over
    `opts.grad_accum` micro-batches weighted by their share of the minibatch's units (tokens, or
    sequences for the sequence-mean aggregations), so the gradient is that of the aggregate over
    the whole minibatch. A step whose loss or gradient
    norm is non-finite is skipped and counted by `guard` (one per run, so that bad steps in a row
    are counted across rollouts; a fresh one when None); `step` names the rollout step in its
    messages. `rt`: the runtime whose `reduce_gradients` and `clip_gradients` the update calls
    (rlhf.runtime.Runtime; None: data-parallel sums and torch's clipping, as an unsharded run has).
    stats: policy_loss, kl_loss (KL as a loss term), entropy_bonus, value_loss, clipfrac, dual_clipfrac, approx_kl,
    ratio_mean, vf_clipfrac, grad_norm, critic_grad_norm, and ratio_first: the mean ratio of the
    very first minibatch (1 up to rounding: old log-probs come from the same forward as the new
    ones).
    """
    batch = exp.score.shape[0]
    world_batch = batch * dist.world_size()  # the global batch: every rank holds as many rows
    totals: dict[str, float] = {}
    count, ratio_first = 0, None
    gradients = rt if rt is not None else Replicated
    trainable = gradients.trainable(actor)  # a sharded model's shards, as its optimiser holds them
    critic_params = gradients.trainable(critic) if critic is not None else []
    optimized = [(actor_opt, trainable, ""), (critic_opt, critic_params, "critic_")]
    lockstep = gradients.lockstep  # sharded: every rank runs as many forwards
    guard = guard if guard is not None else NonFiniteGuard(opts.max_bad_steps, "optimiser step")
    fill_old = exp.old_logp is None  # a single optimiser step: its forward is pi_old itself
    if fill_old:
        exp.old_logp, exp.entropy = torch.zeros_like(exp.ref_logp), torch.zeros_like(exp.ref_logp)
    for _ in range(opts.epochs):
        order = torch.randperm(world_batch, generator=generator)  # global rows: one permutation for every rank
        for global_minibatch in _chunks(order, opts.minibatch_size):
            minibatch = local_rows(global_minibatch, opts.k).to(exp.score.device)  # this rank's rows of it
            # the minibatch's tokens and loss units over every rank: what each rank's loss sums are divided by
            mb_tokens, mb_units = (max(n, 1.0) for n in dist.sum_all([
                float(exp.mask[minibatch].sum()),
                float(aggregation_units(loss_mask_of(exp.rows(minibatch), opts), opts.loss_agg))]))
            stats: dict[str, float] = {}
            micros: list = _chunks(minibatch, max(1, -(-len(minibatch) // opts.grad_accum)))
            if lockstep:  # None: an idle micro-batch, whose forward and backward meet the others' collectives
                micros += [None] * (most_micro_batches(global_minibatch, opts.k, opts.grad_accum) - len(micros))
            for micro in micros:
                idle = micro is None
                micro = exp.score.new_zeros(1, dtype=torch.long) if idle else micro  # row 0, weighted 0
                part = exp.rows(micro)
                loss_mask = loss_mask_of(part, opts)
                # each micro-batch's share of the minibatch: its aggregate, so weighted, sums to the minibatch's
                weight = aggregation_units(loss_mask, opts.loss_agg) / mb_units * (0.0 if idle else 1.0)
                value_weight = part.mask.sum() / mb_tokens * (0.0 if idle else 1.0)  # the critic's loss is a token mean
                with autocast():
                    if opts.entropy_coef:  # the bonus needs the entropy with its gradient
                        logp, entropy = logprobs_and_entropy(actor, part.rollout, opts.temperature)
                    elif fill_old:
                        logp, entropy = response_logprobs(actor, part.rollout, opts.temperature, with_entropy=True)
                    else:
                        logp = response_logprobs(actor, part.rollout, opts.temperature)
                    if fill_old and not idle:
                        exp.old_logp[micro], exp.entropy[micro] = logp.detach(), entropy.detach()
                        part.old_logp = logp.detach()
                        if callable(advantages):
                            if len(micro) != batch:
                                raise RuntimeError("advantages after the forward need the whole rollout in one micro-batch")
                            advantages, returns = advantages(exp)
                    values = values_of(critic, part.rollout) if critic is not None else None
                aggregate = LOSS_AGGREGATIONS[opts.loss_agg]
                policy_loss, pstats = policy_loss_of(logp, part.old_logp, advantages[micro], loss_mask, opts,
                                                     sampler_logp=part.rollout.logprobs)
                pstats["policy_loss"] = policy_loss.detach()
                loss = policy_loss
                if not opts.kl_in_reward:  # the KL as a loss term (GRPO): its gradient flows through logp
                    kl_loss = aggregate(kl_estimate(logp, part.ref_logp, opts.kl_estimator), loss_mask,
                                        opts.max_new_tokens)
                    loss = loss + kl_coef * kl_loss
                    pstats["kl_loss"] = kl_loss.detach()
                if opts.entropy_coef:  # a bonus: maximising entropy keeps the policy exploring
                    entropy_bonus = aggregate(entropy, loss_mask, opts.max_new_tokens)
                    loss = loss - opts.entropy_coef * entropy_bonus
                    pstats["entropy_bonus"] = entropy_bonus.detach()
                loss = loss * weight
                if values is not None:  # separate parameters and optimiser: the sum backpropagates to each
                    value_loss, vstats = ppo_value_loss(values, part.values, returns[micro], part.mask, opts.value_clip)
                    loss = loss + value_loss * value_weight
                    for key, value in {**vstats, "value_loss": value_loss.detach()}.items():
                        stats[key] = stats.get(key, 0.0) + float(value) * float(value_weight)
                loss.backward()
                for key, value in pstats.items():
                    stats[key] = stats.get(key, 0.0) + float(value) * float(weight)
            stats = dist.sum_stats(stats)  # each rank's figures are weighted by its share: their sums are the minibatch's
            gradients.reduce_gradients(trainable + critic_params)
            if ratio_first is None:
                ratio_first = stats.get("ratio_mean", 1.0)
            optimizer_step(guard, f"{count + 1} of step {step}", stats, optimized, opts.max_grad_norm, schedulers,
                           gradients.clip_gradients)
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + value
            count += 1
    out = {key: value / count for key, value in totals.items()}
    out["ratio_first"] = ratio_first
    return out, advantages, returns


class Replicated:
    """Gradients of whole replicas, as a Runtime treats them unsharded: summed over the ranks
    (`dist.sum_gradients`) and clipped by torch; for callers without a runtime (rlhf doctor)."""

    lockstep = False

    @staticmethod
    def trainable(model) -> list:
        return [p for p in model.parameters() if p.requires_grad]

    @staticmethod
    def reduce_gradients(params: list) -> None:
        dist.sum_gradients(params)

    @staticmethod
    def clip_gradients(params: list, max_norm: float) -> Tensor:
        return torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))


def optimizer_step(guard: NonFiniteGuard, label: str, stats: dict, models: list, max_norm: float,
                   schedulers: list, clip: Callable = Replicated.clip_gradients) -> None:
    """Clip each model's gradients and step its optimiser and the schedulers, unless a loss in
    `stats` or a gradient norm is NaN or inf: then no weight moves (the guard counts the step,
    or stops the run after too many in a row) and the schedulers still advance.

    models: (optimiser, its trainable parameters, stats prefix) for the actor and the critic; an
    optimiser of None (no critic) is left out. `clip(params, max_norm)` clips to a global norm
    (0: no clipping) and returns the norm before. Adds `{prefix}grad_norm` to `stats`."""
    models = [(opt, params, prefix) for opt, params, prefix in models if opt is not None]
    for _, params, prefix in models:
        stats[f"{prefix}grad_norm"] = float(clip(params, max_norm))
    checked = {key: stats[key] for key in ("policy_loss", "kl_loss", "value_loss") if key in stats}
    checked.update({f"{prefix}grad_norm": stats[f"{prefix}grad_norm"] for _, _, prefix in models})
    if guard.check(label, **checked):
        for opt, _, _ in models:
            opt.step()
        for scheduler in schedulers:
            scheduler.step()
    else:
        advance_schedulers(schedulers)
    for opt, _, _ in models:
        opt.zero_grad(set_to_none=True)


def tis_stats(exp: Experience, cap: float) -> dict:
    """The sampler-trainer gap over every rank's real tokens (rlhf.algos.importance): its largest
    |log pi_old - log pi_sampler| (`logprob_gap` is the mean), the share of tokens whose weight the
    cap `cap` cuts (`tis/capped_share`) and of sequences outside [1/cap, cap] (`tis/dropped_share`,
    what --tis-level sequence drops)."""
    local = is_correction_stats(exp.old_logp, exp.rollout.logprobs, exp.mask, cap)
    tokens, sequences = float(exp.mask.sum()), float((exp.mask.sum(1) > 0).sum())
    capped, dropped, tokens, sequences = dist.sum_all([float(local["capped_share"]) * tokens,
                                                       float(local["dropped_share"]) * sequences, tokens, sequences])
    return {"tis/gap_max": max(dist.gather_objects(float(local["gap_max"]))),
            "tis/capped_share": capped / max(tokens, 1.0), "tis/dropped_share": dropped / max(sequences, 1.0)}


def rollout_stats(exp: Experience, kl_by_kind: dict[str, Tensor], advantages: Tensor, returns: Tensor | None,
                  tis_cap: float = 0.0) -> dict:
    """What the rollout phase measured, over every rank's rows: per-sequence KL by estimator,
    entropy, lengths, EOS share, sampler-vs-training log-prob gap and what truncated importance
    sampling makes of it (`tis_stats`, with --tis-cap, or 2 when it is off), and (with a critic)
    explained variance of the values."""
    mask = exp.mask
    stats = {f"kl_{kind}": global_mean((kl * mask).sum(1)) for kind, kl in kl_by_kind.items()}
    stats.update(
        entropy=global_masked_mean(exp.entropy, mask),
        response_length=global_mean(mask.sum(1).float()),
        eos_rate=global_mean(exp.rollout.ended.float()),
        logprob_gap=global_masked_mean((exp.rollout.logprobs - exp.old_logp).abs(), mask),
        **tis_stats(exp, tis_cap or 2.0),
        advantage_mean=global_masked_mean(advantages, mask),
        advantage_std=global_masked_mean(advantages**2, mask) ** 0.5,
    )
    if returns is not None and exp.values is not None:
        stats["explained_variance"] = float(explained_variance(exp.values, returns, mask, sum_across=dist.sum_tensor))
        stats["value_mean"] = global_masked_mean(exp.values, mask)
    return stats
