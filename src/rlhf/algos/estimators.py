"""The advantage estimators of the policy-gradient algorithms, one function each behind one
signature, listed by name in ADVANTAGE_ESTIMATORS (the names `rlhf.config.algorithms` records):

    estimator(score, penalty, mask, values, settings, sum_across=None) -> (advantages, returns | None)

score: (B,) the sequence reward of each response, B // k groups of k consecutive samples of the
same prompt; penalty: (B, T) the per-token penalty taken out of the reward (kl_coef * KL_t when
the KL is in the reward, zeros when it is a loss term); mask: (B, T), 1 on a prefix of each row;
values: (B, T) V(s_t) of a critic, or None; settings: EstimatorSettings; sum_across: the batch-wide
statistics are those of every process's rows (rlhf.algos.masked.SumAcross).
Returns advantages (B, T), 0 where mask is 0, and the critic's returns (B, T) (GAE) or None.

A sequence-level estimator sees the sequence reward score - sum_t penalty_t; a token-level one
the per-token reward -penalty_t, plus the score on the last token.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from rlhf.algos.advantages import gae, grpo_advantages, reinforce_pp_advantages, rloo_advantages
from rlhf.algos.masked import SumAcross, whiten


@dataclass(frozen=True)
class EstimatorSettings:
    """The hyper-parameters the estimators read (each reads its own)."""

    k: int = 1  # samples per prompt, consecutive rows (rloo, grpo, reinforce++-baseline)
    gamma: float = 1.0  # discount over response tokens (gae, reinforce++)
    lam: float = 0.95  # GAE lambda
    whiten: bool = True  # gae: advantages normalised to zero mean, unit variance over the batch
    scale_by_std: bool = True  # grpo: divided by the group's reward std (off: Dr. GRPO)


def last_token_reward(score: Tensor, mask: Tensor) -> Tensor:
    """(B,) score placed on the last real token of each (B, T) row; zeros elsewhere."""
    rewards = torch.zeros(mask.shape, dtype=score.dtype, device=score.device)
    last = (mask.sum(1) - 1).clamp(min=0).long()
    return rewards.scatter(1, last[:, None], score[:, None]) * mask


def _token_rewards(score: Tensor, penalty: Tensor, mask: Tensor) -> Tensor:
    """(B, T): the score on the last token minus the per-token penalty."""
    return last_token_reward(score, mask) - penalty * mask


def _sequence_rewards(score: Tensor, penalty: Tensor, mask: Tensor) -> Tensor:
    """(B,): the score minus the summed per-token penalty."""
    return score - (penalty * mask).sum(1)


def _batch_mean(x: Tensor, sum_across: SumAcross) -> Tensor:
    """The mean of `x` (any shape) over every process's entries (summed in float64)."""
    totals = torch.stack([torch.tensor(float(x.numel()), dtype=torch.float64, device=x.device), x.double().sum()])
    count, total = totals if sum_across is None else sum_across(totals)
    return (total / count.clamp(min=1)).to(x.dtype)


def gae_estimator(score, penalty, mask, values, settings: EstimatorSettings, sum_across: SumAcross = None):
    """PPO's: GAE (``gae``) over the critic's values on the per-token reward, whitened over the
    batch unless ``settings.whiten`` is off. Returns (advantages, returns)."""
    if values is None:
        raise ValueError("the gae estimator needs the critic's values")
    advantages, returns = gae(values, _token_rewards(score, penalty, mask), mask, settings.gamma, settings.lam)
    if settings.whiten:
        advantages = whiten(advantages, mask, sum_across=sum_across) * mask
    return advantages, returns


def rloo_estimator(score, penalty, mask, values, settings: EstimatorSettings, sum_across: SumAcross = None):
    """RLOO: the sequence reward minus the mean of the prompt's other k - 1 samples, on every token."""
    return rloo_advantages(_sequence_rewards(score, penalty, mask), settings.k)[:, None] * mask, None


def grpo_estimator(score, penalty, mask, values, settings: EstimatorSettings, sum_across: SumAcross = None):
    """GRPO: the sequence reward minus its group mean, divided by the group std unless
    ``settings.scale_by_std`` is off (Dr. GRPO), on every token."""
    rewards = _sequence_rewards(score, penalty, mask)
    return grpo_advantages(rewards, settings.k, scale_by_std=settings.scale_by_std)[:, None] * mask, None


def reinforce_estimator(score, penalty, mask, values, settings: EstimatorSettings, sum_across: SumAcross = None):
    """REINFORCE with a baseline (Williams 1992): the sequence reward minus its batch mean."""
    rewards = _sequence_rewards(score, penalty, mask)
    return (rewards - _batch_mean(rewards, sum_across))[:, None] * mask, None


def reinforce_pp_estimator(score, penalty, mask, values, settings: EstimatorSettings, sum_across: SumAcross = None):
    """REINFORCE++ (Hu 2025): the return-to-go of the per-token reward, normalised over the batch."""
    rewards = _token_rewards(score, penalty, mask)
    return reinforce_pp_advantages(rewards, mask, settings.gamma, sum_across=sum_across), None


def reinforce_pp_baseline_estimator(score, penalty, mask, values, settings: EstimatorSettings,
                                    sum_across: SumAcross = None):
    """REINFORCE++-baseline (Hu 2025): the score minus its group mean, then as REINFORCE++."""
    centred = grpo_advantages(score, settings.k, scale_by_std=False)
    return reinforce_pp_estimator(centred, penalty, mask, values, settings, sum_across)


ADVANTAGE_ESTIMATORS = {
    "gae": gae_estimator,
    "rloo": rloo_estimator,
    "grpo": grpo_estimator,
    "reinforce": reinforce_estimator,
    "reinforce++": reinforce_pp_estimator,
    "reinforce++-baseline": reinforce_pp_baseline_estimator,
}
