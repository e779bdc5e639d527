"""Length-controlled win rate (AlpacaEval 2's regression on the length difference)."""

import math

import pytest
import torch

from rlhf.eval.metrics import length_controlled_win_rate


def simulated(n, length_effect, quality, seed=0):
    """n comparisons: the policy answers 8 tokens longer on average (sd 10); P(win) =
    sigmoid(quality + length_effect * tanh(diff / sd))."""
    g = torch.Generator().manual_seed(seed)
    diff = 8 + 10 * torch.randn(n, generator=g)
    p = torch.sigmoid(quality + length_effect * torch.tanh(diff / diff.std()))
    outcomes = (torch.rand(n, generator=g) < p).double().tolist()
    reference = (20 + torch.zeros(n)).tolist()
    return outcomes, (torch.tensor(reference) + diff).tolist(), reference


def test_outcomes_driven_only_by_length_give_half():
    outcomes, lengths, reference = simulated(4000, length_effect=3.0, quality=0.0)
    raw = sum(outcomes) / len(outcomes)
    lc = length_controlled_win_rate(outcomes, lengths, reference, bootstrap=20)
    assert raw > 0.65  # the longer side wins: the raw win rate rewards length
    assert lc["lc_win_rate"] == pytest.approx(0.5, abs=0.04)
    assert lc["length_coef"] == pytest.approx(3.0, rel=0.2)
    assert lc["lc_ci_low"] < 0.5 < lc["lc_ci_high"]


def test_length_plays_no_role_lc_equals_raw():
    outcomes, lengths, reference = simulated(4000, length_effect=0.0, quality=math.log(0.7 / 0.3))
    raw = sum(outcomes) / len(outcomes)
    lc = length_controlled_win_rate(outcomes, lengths, reference, bootstrap=20)
    assert lc["lc_win_rate"] == pytest.approx(raw, abs=0.02)
    assert abs(lc["length_coef"]) < 0.3


def test_equal_lengths_by_hand():
    # No length difference anywhere: the fit is the intercept alone, sigmoid(theta0) = mean outcome
    # (ties count half): (1 + 0.5 + 0 + 1) / 4 = 0.625.
    lc = length_controlled_win_rate([1, 0.5, 0, 1], [7, 7, 7, 7], [7, 7, 7, 7], bootstrap=0)
    assert lc["lc_win_rate"] == pytest.approx(0.625, abs=1e-9) and lc["length_coef"] == 0.0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="3 outcomes, 2 lengths"):
        length_controlled_win_rate([1, 0, 1], [1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        length_controlled_win_rate([2], [1], [1])
