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
