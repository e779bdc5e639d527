"""The settings of `rlhf ppo`'s update, resolved from its config: the flags, and where a flag is
unset (None, 0, auto) the algorithm's record (rlhf.config.algorithms.ALGORITHMS)."""

from __future__ import annotations

import dataclasses

from ..config import PPOConfig
from ..config.algorithms import ALGORITHMS


@dataclasses.dataclass(frozen=True)
class Options:
    """The settings the update needs, with the algorithm's defaults filled in."""

    k: int
    epochs: int
    minibatch_size: int
    grad_accum: int
    kl_in_reward: bool
    kl_estimator: str
    advantage: str  # the advantage estimator: a name of rlhf.algos.ADVANTAGE_ESTIMATORS
    policy_loss: str  # the per-token policy loss: a name of rlhf.algos.POLICY_LOSSES
    clip: float
    value_clip: float
    gamma: float
    lam: float
    whiten_advantages: bool
    grpo_scale_by_std: bool
    temperature: float
    max_grad_norm: float
    dual_clip: float = 3.0  # bound on -ratio * A where A < 0 (Ye et al. 2020); 0 = off (defaults as PPOConfig's)
    max_bad_steps: int = 5  # non-finite optimiser steps in a row before the run stops
    clip_high: float | None = None  # upper clip of the ratio (1 + clip_high); None = `clip` (symmetric)
    ratio_level: str = "token"  # importance ratio per token or per sequence (GSPO); rlhf.algos.LOG_RATIOS
    loss_agg: str = "token-mean"  # aggregation of the per-token loss; rlhf.algos.LOSS_AGGREGATIONS
    max_new_tokens: int = 48  # the constant normaliser of seq-mean-token-sum-norm (Dr. GRPO)
    mask_truncated: bool = False  # responses that never reached EOS are masked out of the loss
    entropy_coef: float = 0.0  # weight of the entropy bonus
    tis_cap: float = 0.0  # truncated importance sampling's cap C (rlhf.algos.importance); 0 = off
    tis_level: str = "token"  # token (capped weights) or sequence (drop sequences outside [1/C, C])
    dynamic_sampling: bool = False  # DAPO: keep groups whose rewards differ, sample more to fill the batch
    max_sampling_rounds: int = 4  # dynamic sampling: sampling rounds per step at most


def _flag_or(value, default):
    """A flag's value when set (not None), else the algorithm's."""
    return default if value is None else value


def resolve_options(cfg: PPOConfig) -> Options:
    """The update's settings: the flags, and the algorithm's record where a flag is unset."""
    algo = ALGORITHMS[cfg.algo]
    kl_in_reward = algo.default_kl_in_reward if cfg.kl_in == "auto" else cfg.kl_in == "reward"
    estimator = ("k1" if kl_in_reward else "k3") if cfg.kl_estimator == "auto" else cfg.kl_estimator
    clip_low = _flag_or(cfg.clip_low, _flag_or(algo.clip_low, cfg.clip))
    return Options(
        k=cfg.num_samples or algo.default_samples, epochs=cfg.update_epochs or algo.default_epochs,
        minibatch_size=cfg.minibatch_size, grad_accum=cfg.grad_accum, kl_in_reward=kl_in_reward,
        kl_estimator=estimator, advantage=algo.advantage, policy_loss=algo.policy_loss, clip=clip_low,
        dual_clip=cfg.dual_clip, value_clip=cfg.value_clip, gamma=cfg.gamma, lam=cfg.lam,
        whiten_advantages=cfg.whiten_advantages, grpo_scale_by_std=algo.scale_by_std and cfg.grpo_scale_by_std,
        temperature=cfg.temperature, max_grad_norm=cfg.max_grad_norm, max_bad_steps=cfg.max_bad_steps,
        clip_high=_flag_or(cfg.clip_high, _flag_or(algo.clip_high, clip_low)),
        ratio_level=_flag_or(cfg.ratio_level, algo.ratio_level),
        loss_agg=_flag_or(cfg.loss_agg, algo.loss_agg),
        max_new_tokens=cfg.max_new_tokens, mask_truncated=cfg.mask_truncated, entropy_coef=cfg.entropy_coef,
        tis_cap=cfg.tis_cap, tis_level=cfg.tis_level,
        dynamic_sampling=cfg.dynamic_sampling or algo.dynamic_sampling,
        max_sampling_rounds=cfg.max_sampling_rounds,
    )
