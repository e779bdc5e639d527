"""Conservative rewards in online RL: an ensemble reward's members combined by --reward-aggregate
(by hand through the scorer), and `rlhf ppo` logging the members' disagreement as reward_std."""

import json

import pytest
import torch

from rlhf.config import PPOConfig
from rlhf.models.ensemble import save_ensemble
from rlhf.models.reward import load_reward_model
from rlhf.rollout.scorers import load_scorer
from rlhf.train import ppo

PROMPTS = ["Once upon a time", "The dog was", "Tom had a red ball.", "Sue liked", "The cat", "One day, Lily",
           "Ben and Mia", "The sun"]


@pytest.fixture(scope="module")
def ensemble_dir(tiny_model_dir, tmp_path_factory):
    """Two reward models on the tiny model (heads drawn from seeds 0 and 1, other stored statistics)
    saved as one ensemble directory."""
    from rlhf.models.load import load_tokenizer
    from rlhf.models.reward import load_reward_backbone, record_reward_stats

    root = tmp_path_factory.mktemp("ensemble")
    members = []
    for seed, (mean, std) in enumerate([(0.3, 2.0), (-1.0, 0.5)]):
        torch.manual_seed(seed)
        model, _, _ = load_reward_backbone(tiny_model_dir)
        with torch.no_grad():
            model.score.weight.normal_(0, 0.5)
        record_reward_stats(model, mean=mean, std=std, max_length=64)
        model.save_pretrained(root / f"m{seed}", safe_serialization=True)
        load_tokenizer(tiny_model_dir).save_pretrained(root / f"m{seed}")
        members.append(root / f"m{seed}")
    return save_ensemble(members, root / "model")


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS), encoding="utf-8")
    return path


def test_scorer_aggregates_the_members_by_hand(ensemble_dir):
    responses = [" a happy day", " rain and mud", " the end"]
    prompts = PROMPTS[:3]
    members = [load_reward_model(ensemble_dir / "members" / str(i)) for i in range(2)]
    z = torch.stack([(m.score(prompts, responses) - m.mean) / m.std for m in members])  # (2, B)
    torch.testing.assert_close(load_scorer(str(ensemble_dir))(prompts, responses), z.mean(0))
    torch.testing.assert_close(load_scorer(str(ensemble_dir), aggregate="min")(prompts, responses), z.min(0).values)
    conservative = load_scorer(str(ensemble_dir), aggregate="mean-minus-std", uncertainty_coef=2.0)
    scores, parts = conservative.score(prompts, responses)
    half_gap = (z[0] - z[1]).abs() / 2  # the std of two values
    torch.testing.assert_close(scores, z.mean(0) - 2.0 * half_gap)
    torch.testing.assert_close(parts["ensemble_std"], half_gap)


def test_aggregate_needs_an_ensemble(tiny_model_dir, ensemble_dir):
    with pytest.raises(ValueError, match="rlhf rm --ensemble K"):
        load_scorer(str(ensemble_dir / "members" / "0"), aggregate="min")
    with pytest.raises(ValueError, match="unknown reward aggregate"):
        load_scorer(str(ensemble_dir), aggregate="max")
    with pytest.raises(ValueError, match="uncertainty_coef"):
        PPOConfig(uncertainty_coef=-1.0)


def test_ppo_against_a_conservative_ensemble_logs_reward_std(tiny_model_dir, ensemble_dir, prompts_file, tmp_path):
    out = tmp_path / "ppo"
    ppo.run(PPOConfig(model=str(tiny_model_dir), data=str(prompts_file), out=str(out), reward=str(ensemble_dir),
                      reward_aggregate="min", max_steps=2, batch_size=4, minibatch_size=4, max_new_tokens=8,
                      max_length=64, lr=1e-3, critic_lr=1e-3, precision="fp32", save_every=0, progress=False,
                      samples_every=0, seed=1))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert line["reward_std"] > 0 and line["reward_std"] == pytest.approx(line["reward/ensemble_std"])
        assert line["reward"] <= line["reward/ensemble_mean"]  # the worst member never exceeds the mean
