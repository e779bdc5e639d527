"""Conservative rewards from a reward-model ensemble (Coste et al. 2023, "Reward Model Ensembles
Help Mitigate Overoptimization").

An ensemble of K reward models scores each of B responses; the policy is optimised against one
number per response, aggregated over the members:

- ``mean``: the ensemble's mean score;
- ``min``: worst-case optimisation (WCO), the lowest member score: the policy gains only where
  every member agrees it improved;
- ``mean-minus-std``: uncertainty-weighted optimisation, mean - L * std over members: where
  the members disagree (the policy has left the data they were trained on) the reward drops.
  Coste et al. penalise the variance; the standard deviation keeps the penalty in the reward's
  own units, so L reads as "how many standard deviations of disagreement one unit of reward is
  worth".

The standard deviation divides by K (the spread of these K members, not an estimate for a larger
population), so two members at 1 and 3 have std 1.
"""


from typing import Callable

from torch import Tensor


def member_std(member_rewards: Tensor) -> Tensor:
    """(B,) standard deviation over members (dividing by K) of (K, B) rewards."""
    return member_rewards.std(0, correction=0)


def aggregate_mean(member_rewards: Tensor, uncertainty_coef: float = 0.0) -> Tensor:
    """(B,) mean over the K members of (K, B) rewards."""
    return member_rewards.mean(0)


def aggregate_min(member_rewards: Tensor, uncertainty_coef: float = 0.0) -> Tensor:
    """(B,) lowest member reward of (K, B) rewards (worst-case optimisation)."""
    return member_rewards.min(0).values


def aggregate_mean_minus_std(member_rewards: Tensor, uncertainty_coef: float = 1.0) -> Tensor:
    """(B,) mean - uncertainty_coef * std over the K members of (K, B) rewards."""
    return member_rewards.mean(0) - uncertainty_coef * member_std(member_rewards)


REWARD_AGGREGATES: dict[str, Callable[[Tensor, float], Tensor]] = {
    "mean": aggregate_mean,
    "min": aggregate_min,
    "mean-minus-std": aggregate_mean_minus_std,
}


def aggregate_rewards(member_rewards: Tensor, how: str = "mean", uncertainty_coef: float = 1.0) -> Tensor:
    """(B,) one reward per response from the (K, B) rewards of K members, by `how` (a key of
    REWARD_AGGREGATES); `uncertainty_coef` is L of mean-minus-std and unused by the others."""
    if how not in REWARD_AGGREGATES:
        raise ValueError(f"unknown reward aggregate {how!r}; choose one of {', '.join(REWARD_AGGREGATES)}")
    if member_rewards.ndim != 2 or member_rewards.shape[0] < 1:
        raise ValueError(f"member rewards must be (K, B) with K >= 1, got shape {tuple(member_rewards.shape)}")
    if uncertainty_coef < 0:
        raise ValueError(f"uncertainty_coef must be >= 0, got {uncertainty_coef}")
    return REWARD_AGGREGATES[how](member_rewards, uncertainty_coef)

