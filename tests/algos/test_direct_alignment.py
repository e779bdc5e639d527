import math

import pytest
import torch
from torch.testing import assert_close

from rlhf.algos.preference import (
    LOSSES,
    PAIRWISE_LOSSES,
    cdpo,
    dpo,
    ipo,
    kto,
    kto_reference_point,
    log_odds,
    orpo,
    simpo,
)


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def test_dpo_equal_policy_and_reference_is_log2():
    pol = t(-3.0, -10.0)
    losses, chosen_r, rejected_r = dpo(pol, pol - 1, pol, pol - 1, beta=0.1)
    assert_close(losses, t(math.log(2), math.log(2)))
    assert_close(chosen_r, t(0.0, 0.0))


def test_dpo_hand():
    # h = (-1 - -2) - (-3 - -2) = 2; beta = 0.1: -log sigmoid(0.2) = log(1 + e^-0.2) = 0.59813887
    losses, chosen_r, rejected_r = dpo(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.1)
    assert_close(losses, t(math.log1p(math.exp(-0.2))))
    assert_close(chosen_r, t(0.1))
    assert_close(rejected_r, t(-0.1))


def test_rewards_are_detached():
    pol_c = t(-1.0).requires_grad_()
    losses, chosen_r, _ = dpo(pol_c, t(-3.0), t(-2.0), t(-2.0), beta=0.1)
    assert losses.requires_grad and not chosen_r.requires_grad


def test_cdpo():
    args = (t(-1.0, -5.0), t(-3.0, -2.0), t(-2.0, -4.0), t(-2.0, -1.5))
    assert_close(cdpo(*args, beta=0.1, label_smoothing=0.0)[0], dpo(*args, beta=0.1)[0])
    # eps = 0.5: swapping chosen and rejected (h -> -h) gives the same loss
    swapped = (args[1], args[0], args[3], args[2])
    forward = cdpo(*args, beta=0.1, label_smoothing=0.5)[0]
    assert_close(forward, cdpo(*swapped, beta=0.1, label_smoothing=0.5)[0])
    # eps = 0.1, h = 2, beta = 0.1: 0.9 log(1 + e^-0.2) + 0.1 log(1 + e^0.2) = 0.61813887
    loss = cdpo(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.1, label_smoothing=0.1)[0]
    assert_close(loss, t(0.9 * math.log1p(math.exp(-0.2)) + 0.1 * math.log1p(math.exp(0.2))))


def test_ipo_minimum_at_half_inverse_beta():
    # beta = 0.1: target h = 1 / (2 * 0.1) = 5; at h = 2 the loss is (2 - 5)^2 = 9
    beta = 0.1
    assert_close(ipo(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta)[0], t(9.0))
    pol_c = t(5.0).requires_grad_()
    loss = ipo(pol_c, t(0.0), t(0.0), t(0.0), beta)[0]
    loss.sum().backward()
    assert loss.item() == 0.0 and pol_c.grad.item() == 0.0
    for h in (4.0, 6.0):
        assert ipo(t(h), t(0.0), t(0.0), t(0.0), beta)[0].item() == pytest.approx(1.0)


def test_simpo_length_normalisation():
    # same total log-prob -10 for both; beta = 2, gamma = 0.5
    # lengths 10 / 20: avg -1 vs -0.5 -> logit 2 * (-0.5) - 0.5 = -1.5
    #                  -> log(1 + e^1.5) = 1.70141328
    # lengths 10 / 10: avg -1 vs -1   -> logit -0.5               -> log(1 + e^0.5) = 0.97407698
    ten, twenty = t(10.0), t(20.0)
    totals = (t(-10.0), t(-10.0))
    loss, chosen_r, rejected_r = simpo(
        *totals, t(0.0), t(0.0), 2.0, chosen_lengths=ten, rejected_lengths=twenty
    )
    assert_close(loss, t(math.log1p(math.exp(1.5))))
    assert_close(chosen_r, t(-2.0))
    assert_close(rejected_r, t(-1.0))
    loss_same = simpo(*totals, t(0.0), t(0.0), 2.0, chosen_lengths=ten, rejected_lengths=ten)[0]
    assert_close(loss_same, t(math.log1p(math.exp(0.5))))
    # reference-free: the reference log-probs do not matter
    other_ref = simpo(
        *totals, t(-99.0), t(3.0), 2.0, chosen_lengths=ten, rejected_lengths=twenty
    )[0]
    assert_close(other_ref, loss)


def test_log_odds_hand_and_stable():
    # p = 1/2 -> 0; p = 1/4 -> log(1/3) = -1.0986123
    assert_close(log_odds(t(math.log(0.5), math.log(0.25))), t(0.0, -math.log(3)))
    # near p = 1 and p = 0 the naive log(1 - exp(x)) loses everything; here it stays accurate
    assert_close(log_odds(t(-1e-7)), t(-1e-7 - math.log(-math.expm1(-1e-7))))
    assert_close(log_odds(t(-60.0)), t(-60.0), atol=1e-12, rtol=0)
    assert torch.isfinite(log_odds(torch.tensor([-1e-6, -30.0]))).all()


def test_orpo_hand():
    # chosen: 2 tokens summing to 2 log 0.5 -> avg log 0.5, log odds 0
    # rejected: 3 tokens summing to 3 log 0.25 -> log odds -log 3
    # losses = -0.1 * log sigmoid(log 3) = 0.1 * log(4/3) = 0.02876821
    pol_c = t(2 * math.log(0.5)).requires_grad_()
    pol_r = t(3 * math.log(0.25))
    losses, chosen_r, _ = orpo(
        pol_c, pol_r, t(0.0), t(0.0), 0.1, chosen_lengths=t(2.0), rejected_lengths=t(3.0)
    )
    assert_close(losses, t(0.1 * math.log(4 / 3)))
    assert_close(chosen_r, t(0.1 * math.log(0.5)))
    losses.sum().backward()
    assert torch.isfinite(pol_c.grad).all() and pol_c.grad.item() < 0


def test_kto_reference_point():
    # mismatched KL terms 1 and 0 -> 0.5; a negative estimate is clamped to 0
    policy = t(-1.0, -2.0).requires_grad_()
    z0 = kto_reference_point(policy, t(-2.0, -2.0))
    assert z0.item() == 0.5 and not z0.requires_grad
    assert kto_reference_point(t(-3.0), t(-1.0)).item() == 0.0


def test_kto_hand_and_weights_at_reference_point():
    # beta 0.1, z0 0, r 2: desirable 1 - sigmoid(0.2) = 0.450166
    #                      undesirable 1 - sigmoid(-0.2) = 0.549834
    losses, rewards = kto(t(-1.0, -1.0), t(-3.0, -3.0), torch.tensor([True, False]), t(0.0), 0.1)
    sig = 1 / (1 + math.exp(-0.2))
    assert_close(losses, t(1 - sig, sig))
    assert_close(rewards, t(0.2, 0.2))
    # at r = z0 each loss is half its weight
    at_ref, _ = kto(t(-1.0, -1.0), t(-1.5, -1.5), torch.tensor([True, False]), t(0.5), 0.1,
                    desirable_weight=2.0, undesirable_weight=3.0)
    assert_close(at_ref, t(1.0, 1.5))


def test_kto_sign_conventions():
    policy = t(-1.0, -1.0).requires_grad_()
    losses, _ = kto(policy, t(-2.0, -2.0), torch.tensor([True, False]), t(0.3), 0.5)
    losses.sum().backward()
    # raising log pi (so r) lowers a desirable example's loss and raises an undesirable one's
    assert policy.grad[0] < 0 < policy.grad[1]


def test_loss_tables():
    assert set(LOSSES) == {"dpo", "cdpo", "ipo", "simpo", "orpo", "kto"}
    gen = torch.Generator().manual_seed(0)
    logps = [-(torch.rand(4, generator=gen) * 20 + 1).double() for _ in range(4)]
    lengths = dict(chosen_lengths=t(5.0, 9.0, 20.0, 30.0), rejected_lengths=t(7.0, 3.0, 25.0, 40.0))
    # every pairwise loss accepts the same call, as a trainer makes it
    for name, loss_fn in PAIRWISE_LOSSES.items():
        losses, chosen_r, rejected_r = loss_fn(*logps, 0.1, **lengths)
        assert losses.shape == chosen_r.shape == rejected_r.shape == (4,), name
        assert torch.isfinite(losses).all(), name


def test_dpo_gradient_raises_chosen_lowers_rejected_and_stays_finite():
    pol_c, pol_r = t(-5.0).requires_grad_(), t(-5.0).requires_grad_()
    losses, _, _ = dpo(pol_c, pol_r, t(-5.0), t(-5.0), beta=0.1)
    losses.sum().backward()
    # at h = 0: d/dh -log sigmoid(beta h) = -beta / 2 = -0.05
    assert_close(pol_c.grad, t(-0.05))
    assert_close(pol_r.grad, t(0.05))
    # log-sigmoid, not log(sigmoid): huge margins give 0 and |h| beta, never inf or nan
    far = dpo(t(0.0, -1e4), t(-1e4, 0.0), t(0.0, 0.0), t(0.0, 0.0), beta=1.0)[0]
    assert_close(far, t(0.0, 1e4))


def test_simpo_gamma_is_the_margin_to_beat():
    # equal average log-probs: logit -gamma -> log(1 + e^gamma); avg gap gamma / beta: logit 0 -> log 2
    ten = t(10.0)
    at_zero = simpo(t(-10.0), t(-10.0), t(0.0), t(0.0), 2.0, chosen_lengths=ten, rejected_lengths=ten, gamma=1.0)[0]
    assert_close(at_zero, t(math.log1p(math.e)))
    # chosen avg -0.5, rejected avg -1: beta * 0.5 = gamma
    at_margin = simpo(t(-5.0), t(-10.0), t(0.0), t(0.0), 2.0, chosen_lengths=ten, rejected_lengths=ten, gamma=1.0)[0]
    assert_close(at_margin, t(math.log(2)))


def test_kto_undesirable_hand_with_positive_reference_point():
    # beta 1, z0 0.5, r = -1 (policy below reference): undesirable 1 - sigmoid(0.5 - (-1)) = 1 - sigmoid(1.5)
    losses, rewards = kto(t(-3.0), t(-2.0), torch.tensor([False]), t(0.5), 1.0)
    assert_close(losses, t(1 - 1 / (1 + math.exp(-1.5))))
    assert_close(rewards, t(-1.0))
