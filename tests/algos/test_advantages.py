import pytest
import torch
from torch.testing import assert_close

from rlhf.algos.advantages import (
    discounted_returns,
    gae,
    grpo_advantages,
    rloo_advantages,
    rloo_baseline,
)


def slow_gae(values, rewards, lengths, gamma, lam):
    """Direct definition: A_t = sum_l (gamma lam)^l delta_{t+l}, V = 0 past the last real token."""
    B, T = values.shape
    adv = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        n = lengths[b]
        v = [values[b, t].item() for t in range(n)] + [0.0]
        deltas = [rewards[b, t].item() + gamma * v[t + 1] - v[t] for t in range(n)]
        for t in range(n):
            adv[b, t] = sum((gamma * lam) ** l * deltas[t + l] for l in range(n - t))
    return adv


def test_gae_single_terminal_reward():
    # T=3, r=[0,0,1], V=0, gamma=0.9, lam=1 -> A=[0.9^2, 0.9, 1] = [0.81, 0.9, 1.0]; returns = A + V
    adv, ret = gae(torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]]), torch.ones(1, 3), 0.9, 1.0)
    assert_close(adv, torch.tensor([[0.81, 0.9, 1.0]]))
    assert_close(ret, adv)


def test_gae_hand_with_values_and_padding():
    # T=2 real + 1 pad, V=[0.5, 0.2], r=[0, 1], gamma=1, lam=0.5
    # delta_1 = 1 + 1*0 - 0.2 = 0.8 (V is 0 after the last real token)
    # delta_0 = 0 + 1*0.2 - 0.5 = -0.3
    # A_1 = 0.8; A_0 = -0.3 + 0.5 * 0.8 = 0.1; returns = A + V = [0.6, 1.0]
    values = torch.tensor([[0.5, 0.2, 9.0]])
    rewards = torch.tensor([[0.0, 1.0, 9.0]])
    adv, ret = gae(values, rewards, torch.tensor([[1, 1, 0]]), 1.0, 0.5)
    assert_close(adv, torch.tensor([[0.1, 0.8, 0.0]]))
    assert_close(ret, torch.tensor([[0.6, 1.0, 0.0]]))


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.0), (0.99, 1.0)])
def test_gae_matches_slow_loop_on_ragged_batch(gamma, lam):
    gen = torch.Generator().manual_seed(0)
    lengths = [7, 1, 4, 0, 6]
    T = 7
    values = torch.randn(len(lengths), T, generator=gen, dtype=torch.float64)
    rewards = torch.randn(len(lengths), T, generator=gen, dtype=torch.float64)
    mask = (torch.arange(T) < torch.tensor(lengths).unsqueeze(1)).long()
    adv, ret = gae(values, rewards, mask, gamma, lam)
    assert_close(adv, slow_gae(values, rewards, lengths, gamma, lam))
    assert_close(ret, (adv + values) * mask)


def test_discounted_returns_hand():
    # r=[1, 0, 2], gamma=0.5: G_2 = 2, G_1 = 0 + 0.5*2 = 1, G_0 = 1 + 0.5*1 = 1.5; pad stays 0
    rewards = torch.tensor([[1.0, 0.0, 2.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    returns = discounted_returns(rewards, mask, 0.5)
    assert_close(returns, torch.tensor([[1.5, 1.0, 2.0, 0.0]]))
    adv, _ = gae(torch.zeros_like(rewards), rewards, mask, 0.5, 1.0)
    assert_close(returns, adv)


def test_rloo_baseline_matches_loop():
    gen = torch.Generator().manual_seed(0)
    k = 4
    rewards = torch.randn(3 * k, generator=gen)
    expected = torch.empty_like(rewards)
    for i in range(len(rewards)):
        group = range(i // k * k, i // k * k + k)
        expected[i] = sum(rewards[j] for j in group if j != i) / (k - 1)
    assert_close(rloo_baseline(rewards, k), expected)
    assert_close(rloo_advantages(rewards, k), rewards - expected)


def test_rloo_hand_and_errors():
    # group [1, 2, 6]: baselines (2+6)/2=4, (1+6)/2=3.5, (1+2)/2=1.5 -> advantages -3, -1.5, 4.5
    assert_close(rloo_advantages(torch.tensor([1.0, 2.0, 6.0]), 3), torch.tensor([-3.0, -1.5, 4.5]))
    with pytest.raises(ValueError):
        rloo_baseline(torch.ones(4), 1)
    with pytest.raises(ValueError):
        rloo_baseline(torch.ones(5), 2)


def test_grpo_zero_mean_unit_std_per_group():
    gen = torch.Generator().manual_seed(0)
    k = 8
    rewards = torch.randn(4 * k, generator=gen) * 5 + 3
    adv = grpo_advantages(rewards, k).view(-1, k)
    assert_close(adv.mean(1), torch.zeros(4), atol=1e-5, rtol=0)
    assert_close(adv.std(1), torch.ones(4), atol=1e-3, rtol=0)
    unscaled = grpo_advantages(rewards, k, scale_by_std=False).view(-1, k)
    assert_close(unscaled, rewards.view(-1, k) - rewards.view(-1, k).mean(1, keepdim=True))


def test_grpo_hand_and_constant_group():
    # [1, 0, 0, 1]: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.57735 -> +-0.5/0.57735 = +-0.86603
    adv = grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4, eps=0.0)
    assert_close(adv, torch.tensor([0.86603, -0.86603, -0.86603, 0.86603]), atol=1e-5, rtol=0)
    # a unanimous group carries no signal and must not divide by zero
    assert_close(grpo_advantages(torch.full((4,), 2.0), 4), torch.zeros(4))
