"""The over-optimisation signals (rlhf.eval.overopt), each worked out by hand on made-up responses."""

import pytest

from rlhf.eval import overopt
from rlhf.eval.overopt import StepSample


def test_repeated_ngram_share_counts_repeats_within_a_response():
    # "a b c a b c": 3-grams abc, bca, cab, abc -> 4 in all, 3 unique -> 1 - 3/4
    assert overopt.repeated_ngram_share("a b c a b c") == pytest.approx(0.25)
    # "the cat the cat the cat": the cat the, cat the cat, the cat the, cat the cat -> 1 - 2/4
    assert overopt.repeated_ngram_share("The cat the cat the CAT") == pytest.approx(0.5)
    assert overopt.repeated_ngram_share("one two three four") == 0.0
    assert overopt.repeated_ngram_share("too short") == 0.0


def test_distinct_n_over_all_responses():
    # 2-grams: (a b), (b c), (a b), (b d) -> 3 unique of 4
    assert overopt.distinct_n(["a b c", "a b d"]) == pytest.approx(0.75)
    assert overopt.distinct_n(["same words", "same words"]) == pytest.approx(0.5)
    assert overopt.distinct_n(["one", ""]) == 1.0


def test_pearson_slope_and_trend_t_by_hand():
    assert overopt.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert overopt.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert overopt.pearson([1, 2, 3], [5, 5, 5]) is None and overopt.pearson([1, 2], [1, 2]) is None
    assert overopt.slope([0, 1, 2], [1, 3, 5]) == pytest.approx(2.0)
    # y = 3, 2, 1.5, 0 on x = 0..3: slope -4.75 / 5 = -0.95; fitted 3.05, 2.1, 1.15, 0.2; residuals
    # -0.05, -0.1, 0.35, -0.2 -> SSR 0.175; standard error sqrt(0.175 / 2 / 5) = 0.132288; t = -7.1813
    assert overopt.trend_t([3, 2, 1.5, 0]) == pytest.approx(-7.1813, abs=1e-4)
    assert overopt.trend_t([1, 2, 3]) == overopt.T_MAX  # a perfect line: clamped, not infinite
    assert overopt.trend_t([2, 2, 2]) == 0.0 and overopt.trend_t([1, 2]) is None


def test_gold_drop_only_while_the_proxy_rises():
    assert overopt.gold_drop([1, 2, 3, 4], [3, 2, 1.5, 0]) == pytest.approx(7.1813, abs=1e-4)
    assert overopt.gold_drop([4, 3, 2, 1], [3, 2, 1.5, 0]) == 0.0  # proxy falling too: no divergence
    assert overopt.gold_drop([1, 2, 3, 4], [0, 1.5, 2, 3]) == 0.0  # gold rising: never below 0
    assert overopt.gold_drop([1, 2], [2, 1]) is None


BASE = StepSample(rewards=(0.0, 1.0), lengths=(10, 10), ended=(True, True), repetition=0.0, distinct=1.0,
                  disagreement=0.2)
DRIFTED = StepSample(rewards=(1.0, 3.0, 5.0), lengths=(10, 20, 30), ended=(True, False, False), repetition=0.3,
                     distinct=0.6, disagreement=0.3)


def test_window_signals_by_hand():
    signals = overopt.window_signals([BASE], [DRIFTED])
    assert signals == pytest.approx({
        "disagreement_rise": 0.3 / 0.2 - 1,  # 0.5
        "length_reward_corr": 1.0,  # rewards 1, 3, 5 on lengths 10, 20, 30
        "length_drift": 1.0,  # mean length 20 against 10
        "eos_drop": 1 - 1 / 3,
        "repetition_rise": 0.3,
        "distinct_drop": 0.4,  # 1 - 0.6 / 1
    })
    # nothing moved: every drift is 0 (the correlation needs varying lengths and is left out)
    assert overopt.window_signals([BASE], [BASE]) == {"disagreement_rise": 0.0, "length_drift": 0.0,
                                                      "eos_drop": 0.0, "repetition_rise": 0.0, "distinct_drop": 0.0}


def test_signals_that_cannot_be_computed_are_left_out():
    single = StepSample(rewards=(1.0, 2.0, 3.0), lengths=(5, 6, 7), ended=None, repetition=0.0, distinct=1.0)
    signals = overopt.window_signals([single], [single])
    assert "disagreement_rise" not in signals and "eos_drop" not in signals and "gold_drop" not in signals


def test_gold_signal_and_proxy_gold_correlation_over_the_window():
    steps = [StepSample(rewards=(float(i),), lengths=(5,), ended=(True,), repetition=0.0, distinct=1.0, gold=g)
             for i, g in enumerate([3, 2, 1.5, 0])]
    assert overopt.window_signals(steps[:1], steps)["gold_drop"] == pytest.approx(7.1813, abs=1e-4)
    # per-step proxy 0, 1, 2, 3 against gold 3, 2, 1.5, 0
    assert overopt.window_measures(steps)["proxy_gold_corr"] == pytest.approx(
        overopt.pearson([0, 1, 2, 3], [3, 2, 1.5, 0]))


def test_step_sample_and_its_measures():
    s = overopt.step_sample(["a b c a b c", "x y z"], rewards=[2.0, 1.0], lengths=[4, 2], ended=[True, False],
                            disagreement=0.1)
    assert s.repetition == pytest.approx((0.25 + 0.0) / 2)
    # 2-grams: ab bc ca ab bc + xy yz -> 7 in all, 5 unique
    assert s.distinct == pytest.approx(5 / 7)
    m = overopt.step_measures(s)
    assert m["length"] == 3 and m["eos_rate"] == 0.5 and m["disagreement"] == 0.1
    assert m["reward_per_token"] == pytest.approx((2 / 4 + 1 / 2) / 2)
    with pytest.raises(ValueError, match="2 responses but 1 lengths"):
        overopt.step_sample(["a", "b"], rewards=[1, 2], lengths=[1])


def test_severities_and_guard_score():
    thresholds = {"a": 0.5, "b": 1.0, "c": 0.0}
    assert overopt.severities({"a": 0.25, "b": 2.0, "c": 9.0}, thresholds) == {"a": 0.5, "b": 2.0}  # c: off
    # baseline rewards 0, 1: mean 0.5, std 0.5; recent 1, 3, 5: mean 3 -> gain (3 - 0.5) / 0.5 = 5
    # severities 0.5 (quiet), 1.2 and 2.0 -> penalty 5 * (0.2 + 1.0) = 6 -> score -1
    score = overopt.guard_score([BASE], [DRIFTED], {"a": 0.5, "b": 1.2, "c": 2.0})
    assert score == pytest.approx(5 - 6)
    assert overopt.guard_score([BASE], [DRIFTED], {}) == pytest.approx(5.0)


def test_guard_score_follows_the_gold_where_every_step_has_one():
    # proxy up, gold down (over-optimisation): the score must fall, or the "best" checkpoint is the worst
    gold = lambda step, g: StepSample(step.rewards, step.lengths, step.ended, step.repetition, step.distinct,  # noqa: E731
                                      step.disagreement, gold=g)
    baseline = [gold(BASE, 0.5), gold(BASE, 0.7)]  # gold mean 0.6, population std 0.1
    # recent gold 0.3 and 0.2: mean 0.25 -> (0.25 - 0.6) / 0.1 = -3.5, though the proxy gained 5 sd
    assert overopt.guard_score(baseline, [gold(DRIFTED, 0.3), gold(DRIFTED, 0.2)], {}) == pytest.approx(-3.5)
    # baseline gold that does not vary: the gain is in gold units; alarms still subtract
    flat = [gold(BASE, 0.5), gold(BASE, 0.5)]
    assert overopt.guard_score(flat, [gold(DRIFTED, 0.9)], {"b": 1.2}) == pytest.approx(0.4 - 1.0)
    # a step without gold: back to the proxy
    assert overopt.guard_score([BASE, gold(BASE, 0.5)], [gold(DRIFTED, 0.9)], {}) == pytest.approx(5.0)


def test_parse_thresholds():
    thresholds = overopt.parse_thresholds(["eos_drop=0.4", "length-drift=0"])
    assert thresholds["eos_drop"] == 0.4 and thresholds["length_drift"] == 0.0
    assert thresholds["distinct_drop"] == overopt.THRESHOLDS["distinct_drop"]
    with pytest.raises(ValueError, match="NAME one of"):
        overopt.parse_thresholds(["eos=0.4"])
    with pytest.raises(ValueError, match="not a number"):
        overopt.parse_thresholds(["eos_drop=lots"])
    with pytest.raises(ValueError, match=">= 0"):
        overopt.parse_thresholds(["eos_drop=-1"])
