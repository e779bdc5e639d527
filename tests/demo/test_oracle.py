import math

from rlhf.demo.tasks import story_demonstrations, story_prompts
from rlhf.demo.oracle import SentimentOracle, gold_reward


def test_gold_reward_orders_sentiment():
    happy, sad = gold_reward(["x", "x"], ["They laughed and had a wonderful, happy day.", "He cried. It was awful."])
    assert happy > 0.5 and sad < -0.5


def test_noiseless_oracle_prefers_the_more_positive_and_splits_ties():
    oracle = SentimentOracle(temperature=0)
    assert oracle.prefer(["p", "p"], ["a great day", "so sad"], ["so sad", "a great day"]) == [0, 1]
    assert oracle.probability_a(0.3, 0.3) == 0.5


def test_noisy_oracle_follows_bradley_terry():
    oracle = SentimentOracle(temperature=0.5, seed=1)
    # gold difference 0.5 at temperature 0.5: P(a) = sigmoid(1) = 0.7311
    assert math.isclose(oracle.probability_a(0.5, 0.0), 1 / (1 + math.exp(-1)))
    picks = [oracle.rng.random() < oracle.probability_a(0.5, 0.0) for _ in range(4000)]
    assert abs(sum(picks) / 4000 - 0.7311) < 0.03


def test_story_prompts_are_held_out_and_deterministic():
    test = {p.prompt for p in story_prompts("test", 128)}
    assert len(test) == 128 and story_prompts("test", 5, seed=3) == story_prompts("test", 5, seed=3)
    assert story_prompts("test", 5, seed=3) != story_prompts("test", 5, seed=4)
    assert all(len(p.split()) == 8 for p in test)
    demos = story_demonstrations(10)
    assert all(len(d.prompt.split()) == 8 and len(d.completion.split()) == 40 for d in demos)
