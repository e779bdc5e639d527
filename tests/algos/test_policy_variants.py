"""Hand-worked numbers for the policy-loss variants: DAPO's asymmetric clip, GSPO's sequence ratio,
the three loss aggregations (Dr. GRPO's constant normaliser), REINFORCE++'s global normalisation,
DAPO's overlong penalty, truncation mask and dynamic-sampling group filter."""

import math

import pytest
import torch
from torch.testing import assert_close

from rlhf.algos import (
    LOSS_AGGREGATIONS,
    aggregation_units,
    clipped_surrogate,
    grpo_advantages,
    informative_groups,
    overlong_penalty,
    ppo_policy_loss,
    reinforce_pp_advantages,
    seq_mean_token_mean,
    seq_mean_token_sum_norm,
    sequence_log_ratio,
    token_log_ratio,
    token_mean,
    truncation_mask,
)

# ---------------------------------------------------------------- asymmetric and dual clip


def test_clip_higher_by_hand():
    # ratios [1.3, 0.7, 1.25], A [1, -1, 1], clip_low 0.2, clip_high 0.28:
    #   1.3 * 1   -> min(1.3, 1.28)  = 1.28  clipped above
    #   0.7 * -1  -> min(-0.7, -0.8) = -0.8  clipped below
    #   1.25 * 1  -> min(1.25, 1.25) = 1.25  inside [0.8, 1.28]: not clipped (symmetric 0.2 would clip it to 1.2)
    log_ratio = torch.log(torch.tensor([[1.3, 0.7, 1.25]]))
    adv, mask = torch.tensor([[1.0, -1.0, 1.0]]), torch.ones(1, 3)
    loss, stats = clipped_surrogate(log_ratio, adv, mask, clip_low=0.2, clip_high=0.28)
    assert_close(loss, torch.tensor([[-1.28, 0.8, -1.25]]))
    assert stats["clipfrac"].item() == pytest.approx(2 / 3)
    symmetric, sym_stats = clipped_surrogate(log_ratio, adv, mask, clip_low=0.2)
    assert_close(symmetric, torch.tensor([[-1.2, 0.8, -1.2]]))
    assert sym_stats["clipfrac"].item() == pytest.approx(1.0)


def test_clip_high_equal_to_clip_low_is_symmetric_ppo():
    torch.manual_seed(0)
    logp = torch.randn(3, 5, requires_grad=True)
    old, adv = logp.detach() + 0.3 * torch.randn(3, 5), torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    reference, ref_stats = ppo_policy_loss(logp, old, adv, mask, clip=0.2, dual_clip=3.0)
    per_token, stats = clipped_surrogate(logp - old, adv, mask, clip_low=0.2, clip_high=0.2, dual_clip=3.0)
    assert_close(token_mean(per_token, mask, 5), reference)
    assert stats["clipfrac"] == ref_stats["clipfrac"] and stats["dual_clipfrac"] == ref_stats["dual_clipfrac"]
    unset, _ = ppo_policy_loss(logp, old, adv, mask, clip=0.2, dual_clip=3.0, clip_high=None)
    assert_close(unset, reference)


def test_dual_clip_with_asymmetric_clip():
    # ratio 5, A = -1: min(-5, clamp(5, 0.8, 1.28) * -1 = -1.28) = -5, below 3 * A = -3 -> held at -3: loss 3
    loss, stats = clipped_surrogate(torch.log(torch.tensor([[5.0]])), torch.tensor([[-1.0]]), torch.ones(1, 1),
                                    clip_low=0.2, clip_high=0.28, dual_clip=3.0)
    assert_close(loss, torch.tensor([[3.0]]))
    assert stats["dual_clipfrac"].item() == 1.0


# ---------------------------------------------------------------- GSPO's sequence ratio


def test_sequence_log_ratio_by_hand():
    # log ratios [[0.1, 0.3], [0.2, pad]] -> per-sequence means [0.2, 0.2], repeated on real tokens
    logp = torch.tensor([[0.1, 0.3], [0.2, 9.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    assert_close(sequence_log_ratio(logp, torch.zeros(2, 2), mask), torch.tensor([[0.2, 0.2], [0.2, 0.0]]))


def test_gspo_gradient_is_the_sequence_ratio_over_length():
    # one sequence, log ratios [0.1, 0.3]: s = e^0.2; A = 1, unclipped (clip 0.5): loss = -s per token;
    # the sequence mean of token means is -s, and d(-s)/d logp_t = -s / |y| = -e^0.2 / 2 for each token
    logp = torch.tensor([[0.1, 0.3]], requires_grad=True)
    mask = torch.ones(1, 2)
    per_token, _ = clipped_surrogate(sequence_log_ratio(logp, torch.zeros(1, 2), mask), torch.ones(1), mask, 0.5)
    loss = seq_mean_token_mean(per_token, mask, 2)
    loss.backward()
    assert loss.item() == pytest.approx(-math.exp(0.2))
    assert_close(logp.grad, torch.full((1, 2), -math.exp(0.2) / 2))


def test_gspo_with_one_token_equals_token_level_ppo():
    torch.manual_seed(1)
    logp_a = torch.randn(6, 1, requires_grad=True)
    logp_b = logp_a.detach().clone().requires_grad_(True)
    old, adv, mask = logp_a.detach() + 0.4 * torch.randn(6, 1), torch.randn(6), torch.ones(6, 1)
    seq, seq_stats = clipped_surrogate(sequence_log_ratio(logp_a, old, mask), adv, mask, 0.2, 0.28, 3.0)
    tok, tok_stats = clipped_surrogate(token_log_ratio(logp_b, old, mask), adv, mask, 0.2, 0.28, 3.0)
    assert_close(seq, tok)
    seq_mean_token_mean(seq, mask, 1).backward()
    seq_mean_token_mean(tok, mask, 1).backward()
    assert_close(logp_a.grad, logp_b.grad)
    assert seq_stats["clipfrac"] == tok_stats["clipfrac"]


# ---------------------------------------------------------------- aggregation

LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])


def test_aggregations_by_hand():
    assert token_mean(LOSS, MASK, 5).item() == pytest.approx(10 / 4)  # (1+2+3+4) / 4 tokens
    assert seq_mean_token_mean(LOSS, MASK, 5).item() == pytest.approx(3.0)  # (2 + 4) / 2 sequences
    assert seq_mean_token_sum_norm(LOSS, MASK, 5).item() == pytest.approx(1.0)  # (6/5 + 4/5) / 2


def test_dr_grpo_normaliser_is_a_constant():
    # Every token's gradient is 1 / (G * L) = 1 / (2 * 5), whatever its sequence's length; token-mean
    # gives 1/4 to all (long sequences weigh more), seq-mean-token-mean 1/(G*|y|) (short ones weigh more).
    grads = {}
    for name, fn in LOSS_AGGREGATIONS.items():
        loss = LOSS.clone().requires_grad_(True)
        fn(loss, MASK, 5).backward()
        grads[name] = loss.grad
    assert_close(grads["seq-mean-token-sum-norm"], torch.tensor([[0.1, 0.1, 0.1], [0.1, 0.0, 0.0]]))
    assert_close(grads["token-mean"], torch.tensor([[0.25, 0.25, 0.25], [0.25, 0.0, 0.0]]))
    assert_close(grads["seq-mean-token-mean"], torch.tensor([[1 / 6, 1 / 6, 1 / 6], [0.5, 0.0, 0.0]]))
    # the constant does not move when the batch's longest response does
    assert seq_mean_token_sum_norm(LOSS, MASK, 10).item() == pytest.approx(0.5)


@pytest.mark.parametrize("name", list(LOSS_AGGREGATIONS))
def test_micro_batches_weighted_by_units_give_the_whole_batch(name):
    torch.manual_seed(2)
    loss = torch.randn(4, 6)
    mask = torch.tensor([[1] * 6, [1, 1, 0, 0, 0, 0], [0] * 6, [1, 1, 1, 1, 0, 0]])
    fn = LOSS_AGGREGATIONS[name]
    whole = fn(loss, mask, 6)
    units = aggregation_units(mask, name)
    parts = sum(fn(loss[i : i + 2], mask[i : i + 2], 6) * aggregation_units(mask[i : i + 2], name) / units
                for i in (0, 2))
    assert_close(parts, whole)


def test_aggregation_units_skip_empty_sequences():
    mask = torch.tensor([[1, 1], [0, 0], [1, 0]])
    assert aggregation_units(mask, "token-mean").item() == 3
    assert aggregation_units(mask, "seq-mean-token-mean").item() == 2
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        aggregation_units(mask, "sum")


# ---------------------------------------------------------------- REINFORCE++


def test_reinforce_pp_normalises_returns_over_the_batch():
    # rewards [[0, 1], [2, pad]], gamma 1 -> returns [[1, 1], [2, 0]]; over the 3 real tokens mean 4/3,
    # unbiased variance ((1/3)^2 * 2 + (2/3)^2) / 2 = 1/3 -> A = (G - 4/3) * sqrt(3)
    mask = torch.tensor([[1, 1], [1, 0]])
    adv = reinforce_pp_advantages(torch.tensor([[0.0, 1.0], [2.0, 5.0]]), mask, gamma=1.0)
    s3 = math.sqrt(3)
    assert_close(adv, torch.tensor([[-s3 / 3, -s3 / 3], [2 * s3 / 3, 0.0]]), rtol=1e-5, atol=1e-6)


def test_reinforce_pp_discounts():
    # gamma 0.5: returns [[0.5, 1]] and [[2]]; mean 7/6, var ((2/3)^2 + (1/6)^2 + (5/6)^2) / 2 = 7/12
    mask = torch.tensor([[1, 1], [1, 0]])
    adv = reinforce_pp_advantages(torch.tensor([[0.0, 1.0], [2.0, 0.0]]), mask, gamma=0.5)
    std = math.sqrt(7 / 12)
    assert_close(adv, torch.tensor([[(0.5 - 7 / 6) / std, (1 - 7 / 6) / std], [(2 - 7 / 6) / std, 0.0]]),
                 rtol=1e-5, atol=1e-6)


def test_reinforce_pp_baseline_by_hand():
    # scores [1, 3 | 2, 2], k = 2: minus group means -> [-1, 1, 0, 0]; one token each;
    # batch mean 0, unbiased variance 2/3 -> A = [-1, 1, 0, 0] / sqrt(2/3)
    centred = grpo_advantages(torch.tensor([1.0, 3.0, 2.0, 2.0]), 2, scale_by_std=False)
    adv = reinforce_pp_advantages(centred[:, None], torch.ones(4, 1), gamma=1.0)
    s = math.sqrt(2 / 3)
    assert_close(adv.flatten(), torch.tensor([-1 / s, 1 / s, 0.0, 0.0]), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- DAPO's shaping and filter


def test_overlong_penalty_by_hand():
    # L = 10, buffer 4: free up to 6 tokens, then linear to -1 at 10
    lengths = torch.tensor([5, 6, 7, 8, 10, 11])
    assert_close(overlong_penalty(lengths, 10, 4), torch.tensor([0.0, 0.0, -0.25, -0.5, -1.0, -1.0]))
    assert_close(overlong_penalty(lengths, 10, 4, penalty=0.5), torch.tensor([0.0, 0.0, -0.125, -0.25, -0.5, -0.5]))
    assert_close(overlong_penalty(lengths, 10, 0), torch.zeros(6))
    with pytest.raises(ValueError, match="buffer"):
        overlong_penalty(lengths, 10, 11)


def test_truncation_mask_drops_unfinished_responses():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert_close(truncation_mask(mask, torch.tensor([True, False])), torch.tensor([[1, 1, 0], [0, 0, 0]]))


def test_informative_groups():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0, 2.0, -1.0, 3.0])
    assert informative_groups(rewards, 2).tolist() == [False, True, False, True]
    assert informative_groups(rewards, 4).tolist() == [True, True]
    with pytest.raises(ValueError, match="divisible"):
        informative_groups(rewards, 3)
