"""Hand-worked numbers for the advantage estimators behind one signature (ADVANTAGE_ESTIMATORS): the
per-token penalty enters the sequence reward as its sum, and batch-wide statistics go through
`sum_across` (the stand-in here: a second process holding the same rows)."""

import torch
from torch.testing import assert_close

from rlhf.algos import ADVANTAGE_ESTIMATORS, EstimatorSettings


def test_grpo_estimator_takes_the_summed_penalty_out_of_the_score():
    # scores [1, 3], penalties summed over the real tokens [0, 1] (the padded 9 does not count) -> rewards [1, 2];
    # group mean 1.5, unbiased std sqrt(0.5) -> A = [-0.5, 0.5] / (0.7071 + 1e-4) on every real token
    mask = torch.tensor([[1, 1], [1, 0]])
    penalty = torch.tensor([[0.0, 0.0], [1.0, 9.0]])
    adv, ret = ADVANTAGE_ESTIMATORS["grpo"](torch.tensor([1.0, 3.0]), penalty, mask, None, EstimatorSettings(k=2))
    a = 0.5 / (0.5**0.5 + 1e-4)
    assert ret is None
    assert_close(adv, torch.tensor([[-a, -a], [a, 0.0]]))


def test_reinforce_baseline_is_the_mean_over_every_process():
    # rows [1, 3] here; a second process holds [5, 7] (sum_across adds its count 2 and sum 12):
    # batch mean (4 + 12) / 4 = 4 -> A = [-3, -1]; alone the mean is 2 -> A = [-1, 1]
    score, mask, penalty = torch.tensor([1.0, 3.0]), torch.ones(2, 1), torch.zeros(2, 1)
    other = lambda t: t + torch.tensor([2.0, 12.0], dtype=t.dtype)  # noqa: E731
    adv, _ = ADVANTAGE_ESTIMATORS["reinforce"](score, penalty, mask, None, EstimatorSettings(), sum_across=other)
    assert_close(adv, torch.tensor([[-3.0], [-1.0]]))
    alone, _ = ADVANTAGE_ESTIMATORS["reinforce"](score, penalty, mask, None, EstimatorSettings())
    assert_close(alone, torch.tensor([[-1.0], [1.0]]))


def test_gae_estimator_whitens_unless_told_not_to():
    # one row, score 1 on the last of 2 tokens, V = 0, gamma = lam = 1: A = returns = [1, 1]; whitened: 0 (no spread)
    score, mask, values = torch.tensor([1.0]), torch.ones(1, 2), torch.zeros(1, 2)
    raw, returns = ADVANTAGE_ESTIMATORS["gae"](score, torch.zeros(1, 2), mask, values,
                                               EstimatorSettings(lam=1.0, whiten=False))
    assert_close(raw, torch.tensor([[1.0, 1.0]]))
    assert_close(returns, raw)
    whitened, _ = ADVANTAGE_ESTIMATORS["gae"](score, torch.zeros(1, 2), mask, values, EstimatorSettings(lam=1.0))
    assert_close(whitened, torch.zeros(1, 2))
