"""The settings of `rlhf ppo`'s update, resolved from its config: the algorithm's defaults, then a
preset's options (rlhf.config.algorithms) where the flag is unset, then the flags."""

from __future__ import annotations

import dataclasses

from ..config import PPOConfig
from ..config.algorithms import preset_options
from .ppo_update import ALGORITHMS


@dataclasses.dataclass(frozen=True)
class Options:
    """The settings the update needs, with the algorithm's defaults filled in."""

    k: int
    epochs: int
    minibatch_size: int
    grad_accum: int
    kl_in_reward: bool
    kl_estimator: str
    clipped: bool
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
    dynamic_sampling: bool = False  # DAPO: keep groups whose rewards differ, sample more to fill the batch
    max_sampling_rounds: int = 4  # dynamic sampling: sampling rounds per step at most


def _preset_or(value, preset: dict, name: str, default):
    """A flag's value when set (not None), else the preset's, else the default."""
    if value is not None:
        return value
    return preset.get(name, default)


def resolve_options(cfg: PPOConfig) -> Options:
    """The update's settings: the algorithm's defaults, then a preset's options (rlhf.config.algorithms)
    where the flag is unset, then the flags."""
    algo = ALGORITHMS[cfg.algo]
    preset = dict(preset_options(cfg.algo))
    kl_in_reward = algo.default_kl_in_reward if cfg.kl_in == "auto" else cfg.kl_in == "reward"
    estimator = ("k1" if kl_in_reward else "k3") if cfg.kl_estimator == "auto" else cfg.kl_estimator
    clip_low = _preset_or(cfg.clip_low, preset, "clip_low", cfg.clip)
    return Options(
        k=cfg.num_samples or algo.default_samples, epochs=cfg.update_epochs or algo.default_epochs,
        minibatch_size=cfg.minibatch_size, grad_accum=cfg.grad_accum, kl_in_reward=kl_in_reward,
        kl_estimator=estimator, clipped=algo.clipped, clip=clip_low, dual_clip=cfg.dual_clip,
        value_clip=cfg.value_clip, gamma=cfg.gamma, lam=cfg.lam, whiten_advantages=cfg.whiten_advantages,
        grpo_scale_by_std=preset.get("grpo_scale_by_std", cfg.grpo_scale_by_std),
        temperature=cfg.temperature, max_grad_norm=cfg.max_grad_norm, max_bad_steps=cfg.max_bad_steps,
        clip_high=_preset_or(cfg.clip_high, preset, "clip_high", clip_low),
        ratio_level=_preset_or(cfg.ratio_level, preset, "ratio_level", "token"),
        loss_agg=_preset_or(cfg.loss_agg, preset, "loss_agg", "token-mean"),
        max_new_tokens=cfg.max_new_tokens, mask_truncated=cfg.mask_truncated, entropy_coef=cfg.entropy_coef,
        dynamic_sampling=cfg.dynamic_sampling or bool(preset.get("dynamic_sampling", False)),
        max_sampling_rounds=cfg.max_sampling_rounds,
    )
