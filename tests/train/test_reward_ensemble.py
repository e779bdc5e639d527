"""`rlhf rm --ensemble K` and `--warm K`: one directory that load_reward_model loads (mean and std
by hand from the members), WARM's element-wise weight average, and member-by-member resume."""

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from rlhf.config import RewardConfig
from rlhf.models import compat
from rlhf.models.ensemble import EnsembleRewardModel, average_state_dicts
from rlhf.models.reward import RewardModel, load_reward_model
from rlhf.rollout.scorers import load_scorer
from rlhf.train import reward

PROMPTS = ["Story 1: Once upon a time", "Story 2: Once upon a time", "Story 3: The sun"]
RESPONSES = [" there was a happy dog.", " a sad cat.", " was warm."]


@pytest.fixture
def pairs_file(tmp_path):
    rows = [{"prompt": f"Story {i}: Once upon a time", "chosen": " there was a happy dog who played all day.",
             "rejected": " a sad cat."} for i in range(16)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def config(tiny_model_dir, pairs_file, out, **kw):
    return RewardConfig(model=str(tiny_model_dir), data=str(pairs_file), out=str(out), max_steps=4, batch_size=4,
                        max_length=48, lr=2e-3, log_every=1, progress=False, precision="fp32", **kw)


def test_ensemble_loads_as_one_model_with_members_mean_and_std(tiny_model_dir, pairs_file, tmp_path):
    model_dir = reward.run(config(tiny_model_dir, pairs_file, tmp_path / "ens", ensemble=2, eval_data=str(pairs_file)))
    rm = load_reward_model(model_dir)
    assert isinstance(rm, EnsembleRewardModel) and len(rm) == 2

    # By hand: each member alone, standardised with its own stored statistics, then mean and std over the two.
    members = [load_reward_model(tmp_path / "ens" / "members" / str(i) / "model") for i in range(2)]
    assert all(isinstance(m, RewardModel) for m in members)
    z = [(m.score(PROMPTS, RESPONSES) - m.mean) / m.std for m in members]
    assert not torch.equal(z[0], z[1])  # different seeds: different members
    mean, std = rm.score_mean_std(PROMPTS, RESPONSES)
    torch.testing.assert_close(mean, (z[0] + z[1]) / 2)
    torch.testing.assert_close(std, (z[0] - z[1]).abs() / 2)  # population std of two values: half their gap
    torch.testing.assert_close(rm.score(PROMPTS, RESPONSES), mean)

    # Seeds: the two members drew different value heads.
    heads = [load_file(str(tmp_path / "ens" / "members" / str(i) / "model" / "model.safetensors"))["score.weight"]
             for i in range(2)]
    assert not torch.equal(heads[0], heads[1])

    # Everything that takes a reward-model directory takes the ensemble.
    compat.check_model_dir(model_dir, "--reward")
    scorer = load_scorer(str(model_dir))
    torch.testing.assert_close(scorer(PROMPTS, RESPONSES), mean)
    _, parts = scorer.score(PROMPTS, RESPONSES)
    torch.testing.assert_close(parts["ensemble_std"], std)
    assert scorer.model_dir == model_dir / "members" / "0"  # PPO's critic starts from a member
    summary = json.loads((tmp_path / "ens" / "summary.json").read_text())
    assert summary["kind"] == "ensemble" and len(summary["members"]) == 2 and summary["eval_accuracy"] == 1.0
    assert summary["processes"] == 1 and all(m["processes"] == 1 for m in summary["members"])


def test_warm_average_is_the_elementwise_mean_of_the_members(tiny_model_dir, pairs_file, tmp_path):
    model_dir = reward.run(config(tiny_model_dir, pairs_file, tmp_path / "warm", warm=2))
    members = [load_file(str(tmp_path / "warm" / "members" / str(i) / "model" / "model.safetensors")) for i in range(2)]
    averaged = load_file(str(model_dir / "model.safetensors"))
    assert set(averaged) == set(members[0])
    moved = 0
    for key, value in averaged.items():
        torch.testing.assert_close(value, (members[0][key] + members[1][key]) / 2)
        moved += not torch.equal(members[0][key], members[1][key])
    assert moved > 0  # the members differ (data order), so the average is not one of them
    rm = load_reward_model(model_dir)
    assert isinstance(rm, RewardModel)  # one ordinary reward model
    summary = json.loads((tmp_path / "warm" / "summary.json").read_text())
    # Its stored statistics are its own, measured on the training responses.
    from rlhf.data.formats import read_comparisons

    pairs = read_comparisons(pairs_file)
    scores = rm.score([p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs])
    assert rm.mean == pytest.approx(float(scores.mean()), abs=1e-4) == summary["reward_mean"]


def test_members_share_their_start_in_warm_not_in_ensemble(tmp_path):
    from rlhf.train.reward_ensemble import member_config

    base = RewardConfig(model="m", data="d", seed=5)
    warm = [member_config(RewardConfig(model="m", data="d", seed=5, warm=3), i, tmp_path) for i in range(3)]
    ens = [member_config(RewardConfig(model="m", data="d", seed=5, ensemble=3), i, tmp_path) for i in range(3)]
    assert [c.seed for c in warm] == [c.seed for c in ens] == [5, 6, 7]  # data orders differ in both
    assert [c.init_seed for c in warm] == [5, 5, 5]  # one shared value head
    assert [c.init_seed for c in ens] == [None] * 3  # each member's head from its own seed
    assert all(c.ensemble == c.warm == 0 for c in warm + ens) and base.init_seed is None


def test_average_state_dicts_by_hand():
    a = {"w": torch.tensor([1.0, 2.0]), "ids": torch.tensor([0, 1])}
    b = {"w": torch.tensor([3.0, 6.0]), "ids": torch.tensor([0, 1])}
    out = average_state_dicts([a, b])
    assert out["w"].tolist() == [2.0, 4.0] and out["ids"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="integer buffer"):
        average_state_dicts([a, {"w": b["w"], "ids": torch.tensor([1, 0])}])


def test_resume_keeps_a_finished_member_and_continues_a_killed_one(tiny_model_dir, pairs_file, tmp_path):
    reward.run(config(tiny_model_dir, pairs_file, tmp_path / "straight", ensemble=2, save_every=2))

    # A run killed inside member 1, after its step-2 checkpoint: member 0 finished, member 1 has
    # its checkpoint and logs past it but no model/ and no summary.json, and there is no ensemble yet.
    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "straight", killed)
    for leftover in (killed / "model", killed / "members" / "1" / "model"):
        shutil.rmtree(leftover)
    for leftover in (killed / "summary.json", killed / "members" / "1" / "summary.json"):
        leftover.unlink()
    assert [p.name for p in (killed / "members" / "1" / "checkpoints").iterdir()] == ["step-2"]
    member0 = killed / "members" / "0" / "model" / "model.safetensors"
    member0_mtime = member0.stat().st_mtime_ns
    (killed / "members" / "1" / "model").mkdir()  # a half-written model/ without its completion marker

    resumed = reward.run(config(tiny_model_dir, pairs_file, killed, ensemble=2, save_every=2, resume=True))
    assert member0.stat().st_mtime_ns == member0_mtime  # the finished member was kept, not retrained
    steps = [json.loads(line)["step"] for line in (killed / "members" / "1" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # continued from step 2, logs cut back to it
    for i in range(2):
        a = load_file(str(tmp_path / "straight" / "members" / str(i) / "model" / "model.safetensors"))
        b = load_file(str(resumed / "members" / str(i) / "model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit the uninterrupted run's members

    # A resume with another result-relevant value is refused for the kept member.
    shutil.rmtree(killed / "model")
    (killed / "summary.json").unlink()
    changed = dataclasses.replace(config(tiny_model_dir, pairs_file, killed, ensemble=2, save_every=2, resume=True),
                                  lr=1e-3)
    with pytest.raises(ValueError, match="lr"):
        reward.run(changed)
