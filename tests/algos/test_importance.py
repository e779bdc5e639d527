"""Truncated importance sampling (rlhf.algos.importance), against numbers worked out by hand."""

from __future__ import annotations

import math

import torch

from rlhf.algos.importance import is_correction_stats, sequence_is_weights, token_is_weights

# log pi_old - log pi_sampler per token: row 0 (0, +1, -1), row 1 (0, +1, padding)
OLD = torch.tensor([[0.0, -1.0, -2.0], [-0.5, -0.5, 0.0]])
SAMPLER = torch.tensor([[0.0, -2.0, -1.0], [-0.5, -1.5, 0.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def test_token_weights_are_the_ratio_capped():
    # ratios e^0 = 1, e^1 = 2.718 -> capped at 2, e^-1 = 0.368 (kept: TIS caps from above only); padding 0
    expected = torch.tensor([[1.0, 2.0, math.exp(-1.0)], [1.0, 2.0, 0.0]])
    torch.testing.assert_close(token_is_weights(OLD, SAMPLER, MASK, cap=2.0), expected)
    # a cap above every ratio leaves the plain importance ratio
    torch.testing.assert_close(token_is_weights(OLD, SAMPLER, MASK, cap=10.0)[0, 1], torch.tensor(math.e))


def test_sequence_weights_keep_or_drop_whole_sequences():
    # sequence log ratios: row 0: 0 + 1 - 1 = 0 (ratio 1, kept); row 1: 0 + 1 = 1 > log 2 (ratio 2.718, dropped)
    expected = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(sequence_is_weights(OLD, SAMPLER, MASK, cap=2.0), expected)
    # with cap 3 both ratios (1 and 2.718) are inside [1/3, 3]: every real token kept, padding not
    torch.testing.assert_close(sequence_is_weights(OLD, SAMPLER, MASK, cap=3.0), MASK)


def test_weights_carry_no_gradient():
    old = OLD.clone().requires_grad_(True)
    assert not token_is_weights(old, SAMPLER, MASK, 2.0).requires_grad
    assert not sequence_is_weights(old, SAMPLER, MASK, 2.0).requires_grad


def test_the_gap_statistics():
    stats = is_correction_stats(OLD, SAMPLER, MASK, cap=2.0)
    # |gap| on the 5 real tokens: 0, 1, 1, 0, 1 -> mean 3/5, max 1; ratio above 2 (gap > log 2): 2 of 5 tokens;
    # sequences leaving [1/2, 2]: row 1 only, 1 of 2
    assert math.isclose(float(stats["gap_mean"]), 0.6, rel_tol=1e-6)
    assert float(stats["gap_max"]) == 1.0
    assert math.isclose(float(stats["capped_share"]), 0.4, rel_tol=1e-6)
    assert float(stats["dropped_share"]) == 0.5
