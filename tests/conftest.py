"""Shared fixtures: a tiny embedded-default model built once per test session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rlhf.demo  # noqa: F401  registers the demo's labeler `oracle`, as rlhf.cli does before every command

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama + BPE tokenizer, pretrained for a few steps on the bundled corpus."""
    from rlhf.config import PretrainConfig
    from rlhf.train import pretrain

    out = tmp_path_factory.mktemp("tiny-base")
    corpus = out / "corpus.txt"
    stories = [
        "Once upon a time there was a little cat. The cat liked to play in the sun.",
        "Tom had a red ball. He threw it to his friend Sue, and they laughed.",
        "The dog was sad because it rained. Then the sun came out and the dog was happy.",
    ] * 40
    corpus.write_text("\n\n".join(stories), encoding="utf-8")
    cfg = PretrainConfig(
        data=str(corpus), eval_data=str(corpus), out=str(out / "run"), preset="tiny", vocab_size=400,
        max_steps=4, batch_size=4, max_length=32, compile=False, progress=False, num_samples=1, save_every=0,
    )
    return pretrain.run(cfg)


@pytest.fixture
def demonstrations_file(tmp_path) -> Path:
    rows = [
        {"prompt": f"Story {i}: Once upon a time", "completion": " there was a happy dog. The end."} for i in range(24)
    ]
    path = tmp_path / "demos.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
