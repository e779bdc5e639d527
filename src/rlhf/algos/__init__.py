"""The math of RLHF as pure functions on tensors: no I/O, no configuration, only torch.

Shapes: B batch, T response tokens, V vocabulary, K responses per prompt, k samples per prompt.
Per-token tensors are right-padded (B, T) with a 0/1 ``mask`` that is 1 on real tokens.

- ``masked``: masked_sum, masked_mean, masked_var, masked_moments, whiten
- ``logprobs``: token_logprobs (memory-lean), sequence_logprobs, entropy_from_logits
- ``sft``: masked_cross_entropy, shift_for_next_token
- ``advantages``: gae, discounted_returns, rloo_baseline, rloo_advantages, grpo_advantages,
  reinforce_pp_advantages
- ``estimators``: one signature for every algorithm's advantages, by name in ADVANTAGE_ESTIMATORS
  (gae, rloo, grpo, reinforce, reinforce++, reinforce++-baseline); EstimatorSettings,
  last_token_reward
- ``kl``: kl_k1, kl_k2, kl_k3, KL_ESTIMATORS, kl_estimate, AdaptiveKLController,
  FixedKLController
- ``ppo``: clipped_surrogate (asymmetric and dual clip), ppo_policy_loss, ppo_value_loss,
  explained_variance, reinforce_loss
- ``policy_loss``: token_log_ratio, sequence_log_ratio (GSPO) in LOG_RATIOS; clipped_policy_loss,
  policy_gradient_loss, cispo_policy_loss in POLICY_LOSSES; token_mean,
  seq_mean_token_mean, seq_mean_token_sum_norm (Dr. GRPO) in LOSS_AGGREGATIONS; aggregation_units
- ``shaping``: overlong_penalty, truncation_mask, informative_groups (DAPO)
- ``importance``: truncated importance sampling for the sampler-trainer gap: token_is_weights,
  sequence_is_weights in IS_CORRECTIONS; is_correction_stats
- ``preference``: bradley_terry, bradley_terry_with_ties, plackett_luce; dpo, cdpo, ipo, simpo,
  orpo (PAIRWISE_LOSSES), kto and kto_reference_point; LOSSES names all six alignment losses
- ``reward_aggregate``: aggregate_rewards over an ensemble's members (mean, min, mean-minus-std:
  REWARD_AGGREGATES), member_std
"""

from rlhf.algos.advantages import (
    discounted_returns,
    gae,
    grpo_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
    rloo_baseline,
)
from rlhf.algos.estimators import ADVANTAGE_ESTIMATORS, EstimatorSettings, last_token_reward
from rlhf.algos.importance import IS_CORRECTIONS, is_correction_stats, sequence_is_weights, token_is_weights
from rlhf.algos.kl import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    kl_estimate,
    kl_k1,
    kl_k2,
    kl_k3,
)
from rlhf.algos.logprobs import entropy_from_logits, sequence_logprobs, token_logprobs
from rlhf.algos.masked import masked_mean, masked_moments, masked_sum, masked_var, whiten
from rlhf.algos.policy_loss import (
    LOG_RATIOS,
    LOSS_AGGREGATIONS,
    POLICY_LOSSES,
    aggregation_units,
    cispo_policy_loss,
    clipped_policy_loss,
    policy_gradient_loss,
    seq_mean_token_mean,
    seq_mean_token_sum_norm,
    sequence_log_ratio,
    token_log_ratio,
    token_mean,
)
from rlhf.algos.ppo import clipped_surrogate, explained_variance, ppo_policy_loss, ppo_value_loss, reinforce_loss
from rlhf.algos.preference import (
    LOSSES,
    PAIRWISE_LOSSES,
    bradley_terry,
    bradley_terry_with_ties,
    cdpo,
    dpo,
    ipo,
    kto,
    kto_reference_point,
    log_odds,
    orpo,
    plackett_luce,
    simpo,
)
from rlhf.algos.reward_aggregate import REWARD_AGGREGATES, aggregate_rewards, member_std
from rlhf.algos.sft import masked_cross_entropy, shift_for_next_token
from rlhf.algos.shaping import informative_groups, overlong_penalty, truncation_mask

__all__ = [
    "IS_CORRECTIONS", "is_correction_stats", "sequence_is_weights", "token_is_weights",
    "masked_sum", "masked_mean", "masked_var", "masked_moments", "whiten",
    "token_logprobs", "sequence_logprobs", "entropy_from_logits",
    "masked_cross_entropy", "shift_for_next_token",
    "gae", "discounted_returns", "rloo_baseline", "rloo_advantages", "grpo_advantages", "reinforce_pp_advantages",
    "ADVANTAGE_ESTIMATORS", "EstimatorSettings", "last_token_reward",
    "kl_k1", "kl_k2", "kl_k3", "KL_ESTIMATORS", "kl_estimate",
    "AdaptiveKLController", "FixedKLController",
    "clipped_surrogate", "ppo_policy_loss", "ppo_value_loss", "explained_variance", "reinforce_loss",
    "token_log_ratio", "sequence_log_ratio", "LOG_RATIOS", "clipped_policy_loss", "policy_gradient_loss",
    "cispo_policy_loss",
    "POLICY_LOSSES", "token_mean", "seq_mean_token_mean",
    "seq_mean_token_sum_norm", "LOSS_AGGREGATIONS", "aggregation_units",
    "overlong_penalty", "truncation_mask", "informative_groups",
    "bradley_terry", "bradley_terry_with_ties", "plackett_luce",
    "dpo", "cdpo", "ipo", "simpo", "orpo", "log_odds", "kto", "kto_reference_point",
    "PAIRWISE_LOSSES", "LOSSES",
    "aggregate_rewards", "member_std", "REWARD_AGGREGATES",
]
