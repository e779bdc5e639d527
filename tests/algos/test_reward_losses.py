import math

import pytest
import torch
from torch.testing import assert_close

from rlhf.algos.preference import bradley_terry, bradley_terry_with_ties, plackett_luce


def test_bradley_terry_hand():
    # c=1, r=0: log(1 + e^-1) = 0.31326168751822286
    loss = bradley_terry(torch.tensor([1.0]), torch.tensor([0.0]))
    assert_close(loss, torch.tensor(0.31326168751822286))
    # with margin 0.5: log(1 + e^-0.5) = 0.47407698418010663
    loss = bradley_terry(torch.tensor([1.0]), torch.tensor([0.0]), margin=torch.tensor([0.5]))
    assert_close(loss, torch.tensor(0.47407698418010663))
    # batch mean of log 2 (tie in score) and 0.31326...
    both = bradley_terry(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.0]))
    assert_close(both, torch.tensor((math.log(2) + 0.31326168751822286) / 2))


def test_plackett_luce_k2_equals_bradley_terry():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 2, generator=gen)
    ranking = torch.stack([torch.randperm(2, generator=gen) for _ in range(6)])
    chosen = scores.gather(1, ranking[:, :1]).squeeze(1)
    rejected = scores.gather(1, ranking[:, 1:]).squeeze(1)
    assert_close(plackett_luce(scores, ranking), bradley_terry(chosen, rejected))


def test_plackett_luce_k3_hand():
    # scores [1, 2, 3], ranking [2, 0, 1]: pick 3 of {1,2,3}, then 1 of {1,2}
    # P = e^3 / (e^1 + e^2 + e^3) * e^1 / (e^1 + e^2)
    e = math.exp
    prob = e(3) / (e(1) + e(2) + e(3)) * e(1) / (e(1) + e(2))
    loss = plackett_luce(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2, 0, 1]]))
    assert_close(loss, torch.tensor(-math.log(prob)))


def test_plackett_luce_matches_loop():
    gen = torch.Generator().manual_seed(1)
    B, K = 4, 5
    scores = torch.randn(B, K, generator=gen, dtype=torch.float64)
    ranking = torch.stack([torch.randperm(K, generator=gen) for _ in range(B)])
    total = 0.0
    for b in range(B):
        remaining = [scores[b, j].item() for j in ranking[b]]
        for i in range(K):
            total -= remaining[i] - math.log(sum(math.exp(s) for s in remaining[i:]))
    assert_close(plackett_luce(scores, ranking), torch.tensor(total / B, dtype=torch.float64))


def test_ties_hand():
    # Rao-Kupper, d = 0, theta = 2: P(win) = 1/(1+2) = 1/3, P(tie) = (4-1) * 1/3 * 1/3 = 1/3
    zero = torch.zeros(1)
    for tie in (False, True):
        loss = bradley_terry_with_ties(zero, zero, torch.tensor([tie]), log_theta=math.log(2))
        assert_close(loss, torch.tensor(math.log(3)))


def test_ties_probabilities_sum_to_one():
    diff = torch.linspace(-4, 4, 9, dtype=torch.float64)
    zero = torch.zeros_like(diff)

    def prob(chosen, rejected, tie):
        is_tie = torch.tensor([tie])
        pairs = zip(chosen, rejected)
        losses = [bradley_terry_with_ties(c[None], r[None], is_tie, 0.7) for c, r in pairs]
        return torch.stack([(-loss).exp() for loss in losses])

    total = prob(diff, zero, False) + prob(zero, diff, False) + prob(diff, zero, True)
    assert_close(total, torch.ones_like(diff))


def test_ties_favour_equal_scores():
    is_tie = torch.tensor([True])
    at_zero = bradley_terry_with_ties(torch.zeros(1), torch.zeros(1), is_tie)
    for d in (-1.0, 1.0):
        assert bradley_terry_with_ties(torch.tensor([d]), torch.zeros(1), is_tie) > at_zero
    # a strict preference is nearly Bradley-Terry when the tie threshold vanishes
    c, r = torch.tensor([1.0]), torch.tensor([0.0])
    assert_close(bradley_terry_with_ties(c, r, torch.tensor([False]), 1e-6), bradley_terry(c, r))
    with pytest.raises(ValueError):
        bradley_terry_with_ties(c, r, is_tie, log_theta=0.0)
