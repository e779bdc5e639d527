"""Agreement and rating statistics against numbers worked out by hand."""

import math
import random

import pytest

from rlhf.feedback.stats import bootstrap, bradley_terry, cohen_kappa, elo, krippendorff_alpha, leaderboard


def test_cohen_kappa_by_hand():
    # p_o = 3/4; a says 1 half the time, b a quarter: p_e = .5*.25 + .5*.75 = .5 -> (0.75-0.5)/(1-0.5) = 0.5
    assert cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.5)
    assert cohen_kappa(["x", "y", "z"], ["x", "y", "z"]) == pytest.approx(1.0)
    # always opposite on two balanced labels: p_o = 0, p_e = .5 -> -1
    assert cohen_kappa([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    assert math.isnan(cohen_kappa(["a", "a"], ["a", "a"]))
    with pytest.raises(ValueError):
        cohen_kappa([1], [1, 2])


def test_krippendorff_alpha_by_hand():
    # units (a,a), (b,b), (a,b): coincidences o_aa=2, o_bb=2, o_ab=o_ba=1, n=6, n_a=n_b=3
    # D_o = 2/6, D_e = 2*3*3/(6*5) = 0.6 -> alpha = 1 - (1/3)/0.6 = 4/9
    assert krippendorff_alpha([["a", "a"], ["b", "b"], ["a", "b"]]) == pytest.approx(4 / 9)
    # a unit with one label carries nothing; three coders per unit work too
    assert krippendorff_alpha([["a", "a"], ["b", "b"], ["a", "b"], ["a"]]) == pytest.approx(4 / 9)
    assert krippendorff_alpha([["a", "a", "a"], ["b", "b", "b"]]) == pytest.approx(1.0)
    assert math.isnan(krippendorff_alpha([["a"], ["b"]]))


def test_alpha_matches_a_slow_pairwise_reference():
    """Nominal alpha = 1 - D_o/D_e with D_o over pairs within units and D_e over all pairable values."""
    rng = random.Random(0)
    units = [[rng.choice("abc") for _ in range(rng.choice([2, 3]))] for _ in range(40)]
    values = [v for u in units for v in u]
    n = len(values)
    d_o = sum(sum(x != y for i, x in enumerate(u) for j, y in enumerate(u) if i != j) / (len(u) - 1) for u in units) / n
    d_e = sum(x != y for i, x in enumerate(values) for j, y in enumerate(values) if i != j) / (n * (n - 1))
    assert krippendorff_alpha(units) == pytest.approx(1 - d_o / d_e)


def test_elo_by_hand():
    # equal ratings: expected 0.5, K=4 -> the winner gains 2
    assert elo([("a", "b", 1.0)]) == pytest.approx({"a": 1002.0, "b": 998.0})
    # then b wins: E_a = 1/(1+10^(-4/400)) = 0.505756 -> a loses 4*0.505756
    second = elo([("a", "b", 1.0), ("b", "a", 1.0)])
    assert second["a"] == pytest.approx(1002 - 4 * 0.505756, abs=1e-5)
    assert second["a"] + second["b"] == pytest.approx(2000.0)
    assert elo([("a", "b", 0.5)]) == pytest.approx({"a": 1000.0, "b": 1000.0})


def test_bradley_terry_by_hand():
    # a beats b 2 times out of 3: p_a/p_b = 2 -> a gap of 400*log10(2) = 120.41, centred on 1000
    ratings = bradley_terry([("a", "b", 1.0), ("a", "b", 1.0), ("b", "a", 1.0)], prior=0)
    assert ratings["a"] - ratings["b"] == pytest.approx(400 * math.log10(2), abs=1e-3)
    assert ratings["a"] + ratings["b"] == pytest.approx(2000.0)
    # a tie is half a win each way: 1.5 of 2 -> odds 3
    ties = bradley_terry([("a", "b", 1.0), ("b", "a", 0.5)], prior=0)
    assert ties["a"] - ties["b"] == pytest.approx(400 * math.log10(3), abs=1e-3)


def test_bradley_terry_is_the_maximum_likelihood():
    """At the MLE each model's expected wins equal its actual wins (the score equations)."""
    rng = random.Random(1)
    true = {"x": 1.0, "y": 0.5, "z": -0.7}
    battles = []
    for _ in range(600):
        a, b = rng.sample(sorted(true), 2)
        battles.append((a, b, float(rng.random() < 1 / (1 + math.exp(true[b] - true[a])))))
    ratings = bradley_terry(battles, prior=0)
    for m in true:
        expected = sum((1 / (1 + 10 ** ((ratings[b] - ratings[a]) / 400))) if a == m else
                       (1 / (1 + 10 ** ((ratings[a] - ratings[b]) / 400))) for a, b, _ in battles if m in (a, b))
        actual = sum(s if a == m else 1 - s for a, b, s in battles if m in (a, b))
        assert expected == pytest.approx(actual, abs=1e-4)
    assert ratings["x"] > ratings["y"] > ratings["z"]


def test_a_model_that_never_won_gets_a_finite_rating():
    ratings = bradley_terry([("a", "b", 1.0)] * 5)
    assert all(math.isfinite(v) for v in ratings.values()) and ratings["a"] > ratings["b"]


def test_bootstrap_intervals_and_leaderboard():
    battles = [("strong", "weak", 1.0)] * 30 + [("weak", "strong", 1.0)] * 10 + [("strong", "weak", 0.5)] * 4
    ci = bootstrap(battles, bradley_terry, rounds=100, seed=3)
    assert ci == bootstrap(battles, bradley_terry, rounds=100, seed=3)  # seeded
    fit = bradley_terry(battles)
    for model, (low, median, high) in ci.items():
        assert low < fit[model] < high and low <= median <= high
    board = leaderboard(battles, rounds=50)
    assert [r["model"] for r in board] == ["strong", "weak"]
    assert board[0]["battles"] == 44 and board[0]["win_rate"] == pytest.approx(32 / 44)
    assert board[0]["elo_low"] <= board[0]["elo"] <= board[0]["elo_high"]
    assert leaderboard([]) == []
