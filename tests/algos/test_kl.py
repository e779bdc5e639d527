import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from rlhf.algos.kl import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    kl_estimate,
    kl_k1,
    kl_k2,
    kl_k3,
)


def test_estimators_hand():
    # logp - ref_logp = 1: k1 = 1, k2 = 0.5, k3 = e^-1 - 1 + 1 = 0.36788
    logp, ref = torch.tensor([0.0]), torch.tensor([-1.0])
    assert_close(kl_k1(logp, ref), torch.tensor([1.0]))
    assert_close(kl_k2(logp, ref), torch.tensor([0.5]))
    assert_close(kl_k3(logp, ref), torch.tensor([math.exp(-1)]))


def test_all_zero_when_equal():
    logp = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    for kind in KL_ESTIMATORS:
        assert torch.equal(kl_estimate(logp, logp.clone(), kind), torch.zeros(3, 5))


def test_k3_nonnegative_random():
    gen = torch.Generator().manual_seed(0)
    logp, ref = torch.randn(2, 4, 1000, generator=gen).mul(5).unbind(0)
    assert (kl_k3(logp, ref) >= 0).all()


@settings(max_examples=200, deadline=None)
@given(st.floats(-40, 0), st.floats(-40, 0))
def test_k3_nonnegative_property(logp, ref_logp):
    assert kl_k3(torch.tensor([logp]), torch.tensor([ref_logp])).item() >= 0


def test_monte_carlo_matches_true_kl():
    gen = torch.Generator().manual_seed(0)
    logp_all = torch.log_softmax(torch.randn(6, generator=gen), -1)
    ref_all = torch.log_softmax(torch.randn(6, generator=gen), -1)
    true_kl = (logp_all.exp() * (logp_all - ref_all)).sum()
    tokens = torch.multinomial(logp_all.exp(), 200_000, replacement=True, generator=gen)
    logp, ref = logp_all[tokens], ref_all[tokens]
    # k1 and k3 are unbiased for KL(pi || ref) with samples from pi
    assert abs(kl_k1(logp, ref).mean() - true_kl) < 0.02
    assert abs(kl_k3(logp, ref).mean() - true_kl) < 0.02


def test_dispatch_and_unknown_kind():
    logp, ref = torch.tensor([0.3]), torch.tensor([-0.2])
    assert torch.equal(kl_estimate(logp, ref, "k2"), kl_k2(logp, ref))
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(logp, ref, "k4")


def test_adaptive_controller_moves_towards_target():
    # target 6, horizon 10000, 256 steps:
    # kl 12 -> error 1 clipped to 0.2: 0.1 * (1 + 0.2 * 256 / 10000) = 0.100512
    # kl 3 -> error -0.5 clipped to -0.2: 0.1 * (1 - 0.00512) = 0.099488
    # kl 6.6 -> error 0.1: 0.1 * (1 + 0.1 * 0.0256) = 0.100256
    for kl, expected in [(12.0, 0.100512), (3.0, 0.099488), (torch.tensor(6.6), 0.100256)]:
        ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
        assert ctl.update(kl, n_steps=256) == pytest.approx(expected)
        assert ctl.value == pytest.approx(expected)


def test_adaptive_controller_state_dict_round_trip():
    ctl = AdaptiveKLController(0.2, target=4.0, horizon=1000)
    ctl.update(10.0, 64)
    restored = AdaptiveKLController(1.0, target=1.0, horizon=1)
    restored.load_state_dict(ctl.state_dict())
    assert restored.state_dict() == ctl.state_dict()
    assert restored.update(2.0, 64) == ctl.update(2.0, 64)


def test_fixed_controller():
    ctl = FixedKLController(0.05)
    assert ctl.update(100.0, 1000) == 0.05
    other = FixedKLController(1.0)
    other.load_state_dict(ctl.state_dict())
    assert other.value == 0.05


def test_adaptive_controller_ignores_a_non_finite_kl():
    # target 6, horizon 10000, 256 steps: nan and inf leave 0.1 as it is; the next finite
    # measurement (kl 12, error clipped to 0.2) moves it as usual: 0.1 * (1 + 0.2 * 0.0256) = 0.100512
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    for kl in (float("nan"), float("inf"), torch.tensor(float("-inf"))):
        assert ctl.update(kl, n_steps=256) == 0.1
    assert ctl.update(12.0, n_steps=256) == pytest.approx(0.100512)


def test_adaptive_controller_never_leaves_the_finite_positive_range():
    # an n_steps far above the horizon would drive 1 + error * n / horizon below 0 (error -0.2,
    # n / horizon = 10: factor 1 - 2 = -1): the coefficient must stay positive and finite
    # (a negative coefficient would reward drifting from the reference): such a move is not taken.
    # Likewise one that would overflow to inf: 1.5e308 * (1 + 0.2 * 10 / 10) = 1.8e308 > 1.797e308.
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10)
    assert ctl.update(0.0, n_steps=100) == 0.1
    ctl = AdaptiveKLController(1.5e308, target=6.0, horizon=10)
    assert ctl.update(12.0, n_steps=10) == 1.5e308
