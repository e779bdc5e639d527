"""Conservative ensemble rewards (Coste et al. 2023) against hand-worked numbers."""

import pytest
import torch

from rlhf.algos.reward_aggregate import REWARD_AGGREGATES, aggregate_rewards, member_std


def test_aggregates_by_hand():
    # Three members, two responses: response 0 scored [1, 2, 3], response 1 scored [0, 4, -1].
    rewards = torch.tensor([[1.0, 0.0], [2.0, 4.0], [3.0, -1.0]])
    # means 2 and 1; population std sqrt(2/3) = 0.8165 and sqrt(((0-1)^2 + 3^2 + (-2)^2) / 3) = sqrt(14/3) = 2.1602
    torch.testing.assert_close(member_std(rewards), torch.tensor([(2 / 3) ** 0.5, (14 / 3) ** 0.5]))
    torch.testing.assert_close(aggregate_rewards(rewards, "mean"), torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(aggregate_rewards(rewards, "min"), torch.tensor([1.0, -1.0]))
    # mean - 0.5 * std: 2 - 0.40825 = 1.59175 and 1 - 1.08012 = -0.08012
    torch.testing.assert_close(aggregate_rewards(rewards, "mean-minus-std", 0.5),
                               torch.tensor([1.5917517, -0.0801234]))


def test_two_members_std_is_half_their_gap_and_agreement_costs_nothing():
    rewards = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    torch.testing.assert_close(member_std(rewards), torch.tensor([1.0, 0.0]))
    # where the members agree, every aggregate is that shared score
    for how in REWARD_AGGREGATES:
        assert aggregate_rewards(rewards, how, 2.0)[1].item() == 5.0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unknown reward aggregate 'max'"):
        aggregate_rewards(torch.zeros(2, 3), "max")
    with pytest.raises(ValueError, match=r"\(K, B\)"):
        aggregate_rewards(torch.zeros(3), "mean")
    with pytest.raises(ValueError, match="uncertainty_coef"):
        aggregate_rewards(torch.zeros(2, 3), "mean-minus-std", -1.0)
