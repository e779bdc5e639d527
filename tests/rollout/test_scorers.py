import pytest
import torch

from rlhf.rollout.scorers import Scorer, is_callable_spec, load_callable, load_scorer


def test_callable_scorer_returns_float_tensor_and_identity_normalisation():
    scorer = load_scorer("rlhf.demo.oracle:gold_reward")
    scores = scorer(["p", "p"], ["What a wonderful, happy day!", "It was awful and sad."])
    assert scores.dtype == torch.float32 and scores.shape == (2,)
    assert scores[0] > 0.5 > -0.5 > scores[1]
    assert torch.equal(scorer.normalize(scores), scores) and scorer.model_dir is None


def test_bad_specs_and_bad_outputs():
    assert is_callable_spec("pkg.mod:fn") and not is_callable_spec("runs/rm/model")
    with pytest.raises(ValueError, match="import"):
        load_callable("no_such_module_xyz:fn")
    with pytest.raises(ValueError, match="no attribute"):
        load_callable("rlhf.demo.oracle:nope")
    with pytest.raises(ValueError, match="shape"):
        Scorer("short", lambda p, r: [1.0])(["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="non-finite"):
        Scorer("nan", lambda p, r: [float("nan")] * len(r))(["a"], ["x"])
    with pytest.raises(FileNotFoundError):
        load_scorer("/no/such/reward/model")


def test_normalisation_uses_stored_statistics():
    scorer = Scorer("rm", lambda p, r: [3.0, 1.0], mean=1.0, std=2.0)
    assert torch.equal(scorer.normalize(scorer(["a", "b"], ["x", "y"])), torch.tensor([1.0, 0.0]))


def test_a_scorer_that_raises_is_named_with_the_cause_kept():
    def broken(prompts, responses):
        return [1.0 / 0 for _ in responses]

    with pytest.raises(Exception) as err:
        Scorer("my_rules:broken", broken)(["a"], ["x"])
    assert "my_rules:broken" in str(err.value) and "ZeroDivisionError" in str(err.value)
    assert isinstance(err.value.__cause__, ZeroDivisionError)


@pytest.mark.parametrize("returned", [["good"], None, 3.0])
def test_a_scorer_returning_non_numbers_is_named(returned):
    with pytest.raises(ValueError, match="my_rules:words"):
        Scorer("my_rules:words", lambda p, r: returned)(["a"], ["x"])
