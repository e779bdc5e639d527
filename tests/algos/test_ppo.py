import math

import torch
from torch.testing import assert_close

from rlhf.algos.ppo import explained_variance, ppo_policy_loss, ppo_value_loss, reinforce_loss

# One row of 6 real tokens and 1 pad; old_logp = 0 so ratio = exp(logp). clip = 0.2.
#   token  ratio  A   unclipped  clipped  min    gradient
#   0      1.5    +1   1.5        1.2      1.2    0 (ratio > 1.2, A > 0)
#   1      0.5    -1  -0.5       -0.8     -0.8    0 (ratio < 0.8, A < 0)
#   2      1.1    +1   1.1        1.1      1.1    inside
#   3      1.5    -1  -1.5       -1.2     -1.5    unclipped branch wins
#   4      0.5    +1   0.5        0.8      0.5    unclipped branch wins
#   5      0.9    -1  -0.9       -0.9     -0.9    inside
# sum of min = -0.4 -> loss = 0.4 / 6; clipfrac = 2/6; ratio_mean = 6.0 / 6 = 1
RATIOS = [1.5, 0.5, 1.1, 1.5, 0.5, 0.9, 50.0]
ADV = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])


def policy_loss_case():
    logp = torch.tensor([[math.log(r) for r in RATIOS]], requires_grad=True)
    loss, stats = ppo_policy_loss(logp, torch.zeros(1, 7), ADV, MASK, clip=0.2)
    return logp, loss, stats


def test_policy_loss_hand():
    _, loss, stats = policy_loss_case()
    assert_close(loss, torch.tensor(0.4 / 6))
    assert_close(stats["clipfrac"], torch.tensor(2 / 6))
    assert_close(stats["ratio_mean"], torch.tensor(1.0))
    # approx_kl is k3 of old vs new: mean of (ratio - 1) - log ratio
    expected_kl = sum(r - 1 - math.log(r) for r in RATIOS[:6]) / 6
    assert_close(stats["approx_kl"], torch.tensor(expected_kl))
    assert not any(v.requires_grad for v in stats.values())


def test_policy_gradient_zero_exactly_where_clipped():
    logp, loss, _ = policy_loss_case()
    loss.backward()
    grad = logp.grad[0]
    assert grad[0].item() == 0.0 and grad[1].item() == 0.0
    assert grad[6].item() == 0.0  # padding
    # elsewhere d/dlogp of -ratio*A/6 is -ratio*A/6
    for t in (2, 3, 4, 5):
        assert_close(grad[t], torch.tensor(-RATIOS[t] * ADV[0, t].item() / 6))


def test_policy_loss_per_sequence_advantages_broadcast():
    gen = torch.Generator().manual_seed(0)
    logp, old = torch.randn(2, 3, 5, generator=gen).mul(0.3).unbind(0)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    adv = torch.tensor([1.5, -0.5, 2.0])
    a, sa = ppo_policy_loss(logp, old, adv, mask, 0.2)
    b, sb = ppo_policy_loss(logp, old, adv[:, None].expand(3, 5), mask, 0.2)
    assert_close(a, b)
    assert_close(sa["clipfrac"], sb["clipfrac"])


def test_value_loss_hand():
    # old = 0, clip = 0.2, returns [1, 1, -1]
    # v=0.5:   (0.5-1)^2 = 0.25, V_clip = 0.2: (0.2-1)^2 = 0.64 -> 0.64 (clipped term active)
    # v=-0.05: inside the clip range, both 1.1025 -> 1.1025
    # v=0.3:   (0.3+1)^2 = 1.69, V_clip = 0.2: (0.2+1)^2 = 1.44 -> 1.69
    # loss = 0.5 * (0.64 + 1.1025 + 1.69) / 3 = 0.57208333; vf_clipfrac = 1/3
    values = torch.tensor([[0.5, -0.05, 0.3, 7.0]], requires_grad=True)
    returns = torch.tensor([[1.0, 1.0, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, stats = ppo_value_loss(values, torch.zeros(1, 4), returns, mask, 0.2)
    assert_close(loss, torch.tensor(0.5 * (0.64 + 1.1025 + 1.69) / 3))
    assert_close(stats["vf_clipfrac"], torch.tensor(1 / 3))
    loss.backward()
    # token 0: the clipped (constant) term wins -> no gradient; token 2: (v - R) / 3 = 1.3 / 3
    assert values.grad[0, 0].item() == 0.0
    assert_close(values.grad[0, 2], torch.tensor(1.3 / 3))


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 99.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert_close(explained_variance(returns.clone(), returns, mask), torch.tensor(1.0))
    # a constant critic at the mean explains nothing
    assert_close(explained_variance(torch.full((1, 4), 2.0), returns, mask), torch.tensor(0.0))
    # values [1, 2, 2]: residual [0, 0, 1] var 1/3; returns var 1 -> 1 - 1/3
    ev = explained_variance(torch.tensor([[1.0, 2.0, 2.0, 0.0]]), returns, mask)
    assert_close(ev, torch.tensor(2 / 3))
    assert torch.isnan(explained_variance(returns, torch.ones(1, 4), mask))


def test_reinforce_hand_and_broadcast():
    # logp [-1, -2], A = 2 for the sequence: loss = -(2*-1 + 2*-2) / 2 = 3; dloss/dlogp = -A/2 = -1
    logp = torch.tensor([[-1.0, -2.0, -5.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0]])
    loss, stats = reinforce_loss(logp, torch.tensor([2.0]), mask)
    assert_close(loss, torch.tensor(3.0))
    assert_close(stats["advantage_mean"], torch.tensor(2.0))
    loss.backward()
    assert_close(logp.grad, torch.tensor([[-1.0, -1.0, 0.0]]))
    per_token, _ = reinforce_loss(logp, torch.full((1, 3), 2.0), mask)
    assert_close(per_token, loss)


# Dual clip (Ye et al. 2020): where A < 0 the clipped objective is further bounded below by c * A,
# so a huge ratio on a bad token cannot make the loss (and its gradient) unbounded.
# clip = 0.2, c = 3, old_logp = 0:
#   token  ratio  A    min(unclipped, clipped)  max(that, c*A)  gradient d/dlogp of -objective/4
#   0      5.0    -1   min(-5, -1.2) = -5       max(-5, -3) = -3     0 (dual-clipped)
#   1      2.0    -1   min(-2, -1.2) = -2       max(-2, -3) = -2     -ratio*A/4 = 0.5
#   2      5.0    +1   min(5, 1.2) = 1.2        (A > 0: no bound) 1.2  0 (clipped)
#   3      4.0    -0.5 min(-2, -0.6) = -2       max(-2, -1.5) = -1.5  0 (dual-clipped)
# sum = -3 - 2 + 1.2 - 1.5 = -5.3 -> loss = 5.3 / 4; without dual clip: -(-5 - 2 + 1.2 - 2) / 4 = 7.8 / 4
DUAL_RATIOS = [5.0, 2.0, 5.0, 4.0]
DUAL_ADV = torch.tensor([[-1.0, -1.0, 1.0, -0.5]])


def dual_clip_case(dual_clip):
    logp = torch.tensor([[math.log(r) for r in DUAL_RATIOS]], requires_grad=True)
    loss, stats = ppo_policy_loss(logp, torch.zeros(1, 4), DUAL_ADV, torch.ones(1, 4), clip=0.2, dual_clip=dual_clip)
    return logp, loss, stats


def test_dual_clip_hand():
    logp, loss, stats = dual_clip_case(3.0)
    assert_close(loss, torch.tensor(5.3 / 4))
    assert_close(stats["dual_clipfrac"], torch.tensor(2 / 4))
    assert_close(stats["clipfrac"], torch.tensor(1 / 4))  # token 2 only: clipped, not dual-clipped
    loss.backward()
    assert_close(logp.grad, torch.tensor([[0.0, 0.5, 0.0, 0.0]]))


def test_dual_clip_off_is_the_plain_surrogate():
    for off in (None, 0.0):
        _, loss, stats = dual_clip_case(off)
        assert_close(loss, torch.tensor(7.8 / 4))
        assert_close(stats["dual_clipfrac"], torch.tensor(0.0))


def test_dual_clip_leaves_the_ordinary_case_alone():
    # the earlier hand-worked case has ratios <= 1.5 < c = 3: nothing is dual-clipped
    logp = torch.tensor([[math.log(r) for r in RATIOS]])
    plain, _ = ppo_policy_loss(logp, torch.zeros(1, 7), ADV, MASK, clip=0.2)
    dual, stats = ppo_policy_loss(logp, torch.zeros(1, 7), ADV, MASK, clip=0.2, dual_clip=3.0)
    assert_close(dual, plain)
    assert stats["dual_clipfrac"].item() == 0.0


def test_dual_clip_must_exceed_one():
    import pytest

    with pytest.raises(ValueError, match="dual_clip"):
        dual_clip_case(0.5)
