"""`rlhf rm --stats-examples N`: the stored reward mean/std come from a seeded sample of N
training preferences (scoring every response costs a third of an epoch), and equal the
statistics of exactly those responses under the saved model."""

import json

import pytest

from rlhf.config import RewardConfig
from rlhf.models.reward import load_reward_model
from rlhf.train import reward


def test_reward_statistics_are_measured_on_the_seeded_sample(tiny_model_dir, tmp_path):
    rows = [{"prompt": f"Story {i}: Once upon a time", "chosen": " a happy dog " + "ran " * (i % 5),
             "rejected": " a sad cat " + "sat " * (i % 3)} for i in range(20)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = RewardConfig(model=str(tiny_model_dir), data=str(data), out=str(tmp_path / "rm"), max_steps=2, batch_size=4,
                       max_length=32, progress=False, precision="fp32", stats_examples=5, seed=3)
    model_dir = reward.run(cfg)
    summary = json.loads((tmp_path / "rm" / "summary.json").read_text())
    assert summary["stats_examples"] == 5

    import random

    picked = sorted(random.Random(3).sample(range(20), 5))
    rm = load_reward_model(model_dir)
    chosen = [rows[i] for i in picked]
    scores = rm.score([r["prompt"] for r in chosen] * 2, [r["chosen"] for r in chosen] + [r["rejected"] for r in chosen])
    assert float(scores.mean()) == pytest.approx(summary["reward_mean"], abs=1e-4)
    everything = rm.score([r["prompt"] for r in rows] * 2, [r["chosen"] for r in rows] + [r["rejected"] for r in rows])
    assert float(everything.mean()) != pytest.approx(summary["reward_mean"], abs=1e-4)  # a sample, not all 20
