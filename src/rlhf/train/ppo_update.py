"""The pieces of `rlhf ppo` between the sampler and the optimiser: the experience of one rollout
phase, the advantage estimator of each algorithm, and the update phase.

Shapes: B sequences (prompts x k samples, the k samples of a prompt consecutive), P prompt
tokens (left-padded), T response tokens (right-padded), V vocabulary.

The four algorithms differ only in where their advantages come from, listed in ALGORITHMS:

    ppo        per-token reward -beta*KL_t, plus the score on the last token; GAE over a critic
    rloo       sequence reward; baseline = mean of the other k - 1 samples of the prompt
    grpo       sequence reward; baseline = group mean, optionally divided by the group std
    reinforce  sequence reward; baseline = batch mean

Everything else (sampling, scoring, the clipped surrogate, the KL term) is shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..algos import (
    explained_variance,
    gae,
    grpo_advantages,
    kl_estimate,
    masked_mean,
    ppo_policy_loss,
    ppo_value_loss,
    reinforce_loss,
    rloo_advantages,
    whiten,
)
from ..data.records import Rollout
from ..rollout.logprobs import response_logprobs
from ..runtime.guard import NonFiniteGuard, advance_schedulers
from .critic import response_values


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

    @property
    def mask(self) -> Tensor:
        return self.rollout.response_mask

    def rows(self, index: Tensor) -> "Experience":
        """The sub-batch of rows `index` (a minibatch)."""
        r = self.rollout
        sub = Rollout(r.prompt_ids[index], r.prompt_mask[index], r.response_ids[index], r.response_mask[index],
                      r.logprobs[index], r.ended[index])
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return Experience(sub, pick(self.old_logp), self.ref_logp[index], pick(self.values), self.score[index],
                          pick(self.entropy))


# ---------------------------------------------------------------- forward passes


def values_of(critic, rollout: Rollout) -> Tensor:
    """V(s_t) (B, T) fp32 from the critic, 0 on padding."""
    return response_values(critic, rollout.tokens, rollout.attention_mask, rollout.prompt_ids.shape[1]) \
        * rollout.response_mask


# ---------------------------------------------------------------- advantage estimators


def last_token_reward(score: Tensor, mask: Tensor) -> Tensor:
    """(B,) score placed on the last real token of each (B, T) row; zeros elsewhere."""
    rewards = torch.zeros(mask.shape, dtype=score.dtype, device=score.device)
    last = (mask.sum(1) - 1).clamp(min=0)
    return rewards.scatter(1, last[:, None], score[:, None]) * mask


def sequence_reward(exp: Experience, kl: Tensor, kl_coef: float, kl_in_reward: bool) -> Tensor:
    """(B,) score minus, when the KL is in the reward, kl_coef * the summed per-token KL."""
    if not kl_in_reward:
        return exp.score
    return exp.score - kl_coef * (kl * exp.mask).sum(1)


def ppo_advantages(exp: Experience, kl: Tensor, kl_coef: float, opts) -> tuple[Tensor, Tensor]:
    """GAE on r_t = -kl_coef * KL_t + score * [t is last]; advantages whitened over the batch."""
    mask = exp.mask
    rewards = last_token_reward(exp.score, mask)
    if opts.kl_in_reward:
        rewards = rewards - kl_coef * kl * mask
    advantages, returns = gae(exp.values, rewards, mask, opts.gamma, opts.lam)
    if opts.whiten_advantages:
        advantages = whiten(advantages, mask) * mask
    return advantages, returns


def rloo_per_token(exp: Experience, kl: Tensor, kl_coef: float, opts) -> tuple[Tensor, None]:
    """RLOO: the sequence reward minus the mean of the prompt's other k - 1 samples, on every token."""
    rewards = sequence_reward(exp, kl, kl_coef, opts.kl_in_reward)
    return rloo_advantages(rewards, opts.k)[:, None] * exp.mask, None


def grpo_per_token(exp: Experience, kl: Tensor, kl_coef: float, opts) -> tuple[Tensor, None]:
    """GRPO: the sequence reward minus its group mean (divided by the group std unless disabled)."""
    rewards = sequence_reward(exp, kl, kl_coef, opts.kl_in_reward)
    return grpo_advantages(rewards, opts.k, scale_by_std=opts.grpo_scale_by_std)[:, None] * exp.mask, None


def reinforce_per_token(exp: Experience, kl: Tensor, kl_coef: float, opts) -> tuple[Tensor, None]:
    """REINFORCE with a baseline (Williams 1992): the sequence reward minus the batch mean."""
    rewards = sequence_reward(exp, kl, kl_coef, opts.kl_in_reward)
    return (rewards - rewards.mean())[:, None] * exp.mask, None


@dataclass(frozen=True)
class Algorithm:
    advantages: Callable  # (experience, per-token KL (B, T), kl_coef, options) -> (advantages (B, T), returns (B, T) | None)
    uses_critic: bool
    clipped: bool  # clipped surrogate (PPO) or the plain policy gradient (REINFORCE)
    default_samples: int  # k, responses per prompt
    default_epochs: int  # passes over each rollout
    default_kl_in_reward: bool  # else the KL is a loss term


ALGORITHMS: dict[str, Algorithm] = {
    "ppo": Algorithm(ppo_advantages, uses_critic=True, clipped=True, default_samples=1, default_epochs=4,
                     default_kl_in_reward=True),
    "rloo": Algorithm(rloo_per_token, uses_critic=False, clipped=True, default_samples=4, default_epochs=1,
                      default_kl_in_reward=True),
    "grpo": Algorithm(grpo_per_token, uses_critic=False, clipped=True, default_samples=4, default_epochs=1,
                      default_kl_in_reward=False),
    "reinforce": Algorithm(reinforce_per_token, uses_critic=False, clipped=False, default_samples=1,
                           default_epochs=1, default_kl_in_reward=True),
}


# ---------------------------------------------------------------- update phase


def _chunks(index: Tensor, size: int) -> list[Tensor]:
    return [index[i : i + size] for i in range(0, len(index), size)]


def update(actor, critic, exp: Experience, advantages: Tensor | Callable, returns: Tensor | None, kl_coef: float,
           actor_opt, critic_opt, schedulers: list, opts, autocast, generator: torch.Generator,
           guard: NonFiniteGuard | None = None, step: int = 0) -> tuple:
    """K epochs of minibatch steps over one experience; returns (mean stats as floats, advantages,
    returns).

    `advantages` may instead be a function of the experience returning (advantages, returns): it is
    called once the first forward has filled in log pi_old, which must then cover every row (one
    optimiser step over one micro-batch; see `rlhf.train.ppo.single_forward_update`).

    Each minibatch of `opts.minibatch_size` sequences is one optimiser step, accumulated over
    `opts.grad_accum` micro-batches weighted by their share of the minibatch's tokens, so the
    gradient is that of the token mean over the whole minibatch. A step whose loss or gradient
    norm is non-finite is skipped and counted by `guard` (one per run, so that bad steps in a row
    are counted across rollouts; a fresh one when None); `step` names the rollout step in its
    messages.
    stats: policy_loss, kl_loss (KL as a loss term), value_loss, clipfrac, dual_clipfrac, approx_kl,
    ratio_mean, vf_clipfrac, grad_norm, critic_grad_norm, and ratio_first: the mean ratio of the
    very first minibatch (1 up to rounding: old log-probs come from the same forward as the new
    ones).
    """
    batch = exp.score.shape[0]
    totals: dict[str, float] = {}
    count, ratio_first = 0, None
    trainable = [p for p in actor.parameters() if p.requires_grad]
    critic_params = [p for p in critic.parameters() if p.requires_grad] if critic is not None else []
    optimized = [(actor_opt, trainable, ""), (critic_opt, critic_params, "critic_")]
    clip_norm = opts.max_grad_norm if opts.max_grad_norm > 0 else float("inf")
    guard = guard if guard is not None else NonFiniteGuard(opts.max_bad_steps, "optimiser step")
    fill_old = exp.old_logp is None  # a single optimiser step: its forward is pi_old itself
    if fill_old:
        exp.old_logp, exp.entropy = torch.zeros_like(exp.ref_logp), torch.zeros_like(exp.ref_logp)
    for _ in range(opts.epochs):
        order = torch.randperm(batch, generator=generator).to(exp.score.device)
        for minibatch in _chunks(order, opts.minibatch_size):
            mb_tokens = exp.mask[minibatch].sum().clamp(min=1)
            stats: dict[str, float] = {}
            for micro in _chunks(minibatch, -(-len(minibatch) // opts.grad_accum)):
                part = exp.rows(micro)
                weight = part.mask.sum() / mb_tokens
                with autocast():
                    if fill_old:
                        logp, entropy = response_logprobs(actor, part.rollout, opts.temperature, with_entropy=True)
                        exp.old_logp[micro], exp.entropy[micro] = logp.detach(), entropy
                        part.old_logp = logp.detach()
                        if callable(advantages):
                            if len(micro) != batch:
                                raise RuntimeError("advantages after the forward need the whole rollout in one micro-batch")
                            advantages, returns = advantages(exp)
                    else:
                        logp = response_logprobs(actor, part.rollout, opts.temperature)
                    values = values_of(critic, part.rollout) if critic is not None else None
                if opts.clipped:
                    policy_loss, pstats = ppo_policy_loss(logp, part.old_logp, advantages[micro], part.mask, opts.clip,
                                                          opts.dual_clip)
                else:
                    policy_loss, pstats = reinforce_loss(logp, advantages[micro], part.mask)
                    with torch.no_grad():  # how far the policy moved from the rollout's, as PPO reports it
                        log_ratio = logp - part.old_logp
                        pstats["approx_kl"] = masked_mean(torch.expm1(log_ratio) - log_ratio, part.mask)
                        pstats["ratio_mean"] = masked_mean(log_ratio.exp(), part.mask)
                pstats["policy_loss"] = policy_loss.detach()
                loss = policy_loss
                if not opts.kl_in_reward:  # the KL as a loss term (GRPO): its gradient flows through logp
                    kl_loss = masked_mean(kl_estimate(logp, part.ref_logp, opts.kl_estimator), part.mask)
                    loss = loss + kl_coef * kl_loss
                    pstats["kl_loss"] = kl_loss.detach()
                if values is not None:  # separate parameters and optimiser: the sum backpropagates to each
                    value_loss, vstats = ppo_value_loss(values, part.values, returns[micro], part.mask, opts.value_clip)
                    loss = loss + value_loss
                    pstats.update(vstats, value_loss=value_loss.detach())
                (loss * weight).backward()
                for key, value in pstats.items():
                    stats[key] = stats.get(key, 0.0) + float(value) * float(weight)
            if ratio_first is None:
                ratio_first = stats.get("ratio_mean", 1.0)
            optimizer_step(guard, f"{count + 1} of step {step}", stats, optimized, clip_norm, schedulers)
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + value
            count += 1
    out = {key: value / count for key, value in totals.items()}
    out["ratio_first"] = ratio_first
    return out, advantages, returns


def optimizer_step(guard: NonFiniteGuard, label: str, stats: dict, models: list, clip_norm: float,
                   schedulers: list) -> None:
    """Clip each model's gradients and step its optimiser and the schedulers, unless a loss in
    `stats` or a gradient norm is NaN or inf: then no weight moves (the guard counts the step,
    or stops the run after too many in a row) and the schedulers still advance.

    models: (optimiser, its trainable parameters, stats prefix) for the actor and the critic; an
    optimiser of None (no critic) is left out. Adds `{prefix}grad_norm` to `stats`."""
    models = [(opt, params, prefix) for opt, params, prefix in models if opt is not None]
    for _, params, prefix in models:
        stats[f"{prefix}grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, clip_norm))
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


def rollout_stats(exp: Experience, kl_by_kind: dict[str, Tensor], advantages: Tensor, returns: Tensor | None) -> dict:
    """What the rollout phase measured: per-sequence KL by estimator, entropy, lengths, EOS share,
    sampler-vs-training log-prob gap, and (with a critic) explained variance of the values."""
    mask = exp.mask
    stats = {f"kl_{kind}": float((kl * mask).sum(1).mean()) for kind, kl in kl_by_kind.items()}
    stats.update(
        entropy=float(masked_mean(exp.entropy, mask)),
        response_length=float(mask.sum(1).float().mean()),
        eos_rate=float(exp.rollout.ended.float().mean()),
        logprob_gap=float(masked_mean((exp.rollout.logprobs - exp.old_logp).abs(), mask)),
        advantage_mean=float(masked_mean(advantages, mask)),
        advantage_std=float(masked_mean(advantages**2, mask).sqrt()),
    )
    if returns is not None and exp.values is not None:
        stats["explained_variance"] = float(explained_variance(exp.values, returns, mask))
        stats["value_mean"] = float(masked_mean(exp.values, mask))
    return stats
