"""Datasets by Hub name (rlhf.data.hub): a dataset repository laid out in a Hugging Face cache
built here, read offline through `datasets`, with the same row checks as files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def dataset_repo(cache, repo: str, files: dict[str, list[dict]], commit: str = COMMIT, readme: str | None = None):
    """Files (relative path -> rows) as a dataset snapshot in the cache's layout; `readme`: its
    README.md (a Hub dataset card, whose `configs:` name the splits)."""
    root = cache / f"datasets--{repo.replace('/', '--')}"
    if readme:
        (root / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
        (root / "snapshots" / commit / "README.md").write_text(readme, encoding="utf-8")
    for name, rows in files.items():
        path = root / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)


DEMOS = [{"prompt": f"Story {i}: Once upon a time", "completion": " there was a happy dog."} for i in range(16)]
# UltraFeedback's layout: a text prompt beside whole conversations that repeat it
ULTRA = [{"prompt": f"Q{i}?", "chosen": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": "Yes."}],
          "rejected": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": "No."}],
          "score_chosen": 8.0, "score_rejected": 3.0} for i in range(4)]
# Anthropic HH-RLHF's layout: transcripts, one folder per subset
HH = [{"chosen": f"\n\nHuman: Q{i}?\n\nAssistant: Sure.", "rejected": f"\n\nHuman: Q{i}?\n\nAssistant: No."}
      for i in range(3)]

ULTRA_CARD = """---
configs:
- config_name: default
  data_files:
  - split: train_prefs
    path: data/train_prefs.jsonl
---
"""


@pytest.fixture
def hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    dataset_repo(cache, "rlhf-test/demos", {"data/train.jsonl": DEMOS, "data/test.jsonl": DEMOS[:4]})
    dataset_repo(cache, "rlhf-test/ultra", {"data/train_prefs.jsonl": ULTRA}, readme=ULTRA_CARD)
    dataset_repo(cache, "rlhf-test/hh", {"harmless-base/train.jsonl": HH, "helpful-base/train.jsonl": HH[:1]})
    dataset_repo(cache, "rlhf-test/broken", {"data/train.jsonl": DEMOS[:2] + [{"prompt": "no completion"}]})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_splits_by_name_read_as_files_are(hub):
    from rlhf.data.formats import read_comparisons, read_demonstrations

    assert [d.completion for d in read_demonstrations("rlhf-test/demos")] == [r["completion"] for r in DEMOS]
    assert len(read_demonstrations("rlhf-test/demos:test")) == 4
    pairs = read_comparisons("rlhf-test/ultra:train_prefs")
    assert [(p.chosen, p.rejected) for p in pairs] == [("Yes.", "No.")] * 4
    assert pairs[0].prompt[0].content == "Q0?"
    hh = read_comparisons("rlhf-test/hh:harmless-base:train")
    assert [(p.chosen, p.rejected) for p in hh] == [("Sure.", "No.")] * 3


def test_a_bad_row_names_dataset_split_and_row(hub):
    from rlhf.data.formats import DataError, read_demonstrations

    with pytest.raises(DataError, match=r"^rlhf-test/broken:train:row 3: .*completion"):
        read_demonstrations("rlhf-test/broken")
    with pytest.raises(FileNotFoundError, match="no split 'dev'"):
        read_demonstrations("rlhf-test/demos:dev")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE=1.*hf download rlhf-test/missing --repo-type dataset"):
        read_demonstrations("rlhf-test/missing")
    with pytest.raises(FileNotFoundError, match="data file not found: data/missing.jsonl"):
        read_demonstrations("data/missing.jsonl")


def test_sft_on_a_dataset_by_name_pins_its_commit(hub, tmp_path, tiny_model_dir):
    out = tmp_path / "sft"
    done = subprocess.run([sys.executable, "-m", "rlhf", "sft", "--model", str(tiny_model_dir), "--data",
                           "rlhf-test/demos:train", "--out", str(out), "--max-steps", "1", "--batch-size", "4",
                           "--max-length", "32", "--no-progress", "--save-every", "0"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load((out / "config.yaml").read_text())["data"] == f"rlhf-test/demos@{COMMIT}:train"
    assert json.loads((out / "summary.json").read_text())["examples"] == len(DEMOS)
