"""Preference files for the multi-process stage tests."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for `import dist_launch` under --import-mode=importlib


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    happy = [" the dog was happy and played in the sun.", " they laughed and had a lovely day.", " it was fun."]
    sad = [" the dog was sad and cried all day.", " it rained and the cat was angry."]
    rows = [{"prompt": f"Story {i}: Once upon a time", "chosen": happy[i % 3], "rejected": sad[(i // 3) % 2]}
            for i in range(24)]
    path = tmp_path_factory.mktemp("dist-data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reward_model_dir(tiny_model_dir, tmp_path_factory):
    """A reward-model directory as `rlhf rm` saves it (a sequence classifier on the tiny model, its
    head drawn at random so that responses score apart), for the sharded-reward tests."""
    import torch

    from rlhf.models.load import load_tokenizer
    from rlhf.models.reward import load_reward_backbone, record_reward_stats

    torch.manual_seed(0)
    model, _, _ = load_reward_backbone(tiny_model_dir)
    with torch.no_grad():
        model.score.weight.normal_(0, 0.5)
    record_reward_stats(model, mean=0.3, std=2.0, max_length=64)
    out = tmp_path_factory.mktemp("dist-rm")
    model.save_pretrained(out, safe_serialization=True)
    load_tokenizer(tiny_model_dir).save_pretrained(out)
    return out
