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


@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="needs gloo")
def test_a_sharded_ensemble_scores_as_the_whole_one(ensemble_dir, tmp_path, monkeypatch):
    # --sharding fsdp2 shards each member for inference (Runtime.prepare_frozen, in a gloo group of
    # one here); a rank with fewer batches than another runs idle one-row batches, so that every
    # rank runs as many forwards: here the other rank is said to need two batches more
    from types import SimpleNamespace

    from rlhf import runtime

    responses = [" a happy day", " rain and mud", " the end"]
    whole = load_scorer(str(ensemble_dir), aggregate="min")(PROMPTS[:3], responses)
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        monkeypatch.setattr(runtime.context, "_sharding_of", lambda cfg: "fsdp2")
        monkeypatch.setattr(runtime.dist, "launched", lambda: True)
        rt = runtime.init(SimpleNamespace(precision="fp32", seed=0, device="cpu", sharding="fsdp2", lora_r=0),
                          run_dir=False)
        scorer = load_scorer(str(ensemble_dir), aggregate="min")
        members = scorer.named_models("reward")
        rt.prepare_frozen(**members)
        assert sorted(members) == ["reward/0", "reward/1"] and all(rt.is_sharded(m) for m in members.values())
        forwards = []
        for i, member in enumerate(scorer.models):
            member.register_forward_hook(lambda module, args, out, i=i: forwards.append(i))
        monkeypatch.setattr(runtime.dist, "gather_objects", lambda n: [n, n + 2])
        sharded = scorer(PROMPTS[:3], responses)
        assert forwards == [0, 0, 0, 1, 1, 1]  # one batch of the 3 rows and two idle ones, per member
        torch.testing.assert_close(sharded, whole, rtol=0, atol=1e-5)
    finally:
        torch.distributed.destroy_process_group()
