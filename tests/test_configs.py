"""The recipes in configs/ load into their stage's config, run, and are the ones the README and docs cite."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import yaml

from rlhf import config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
# the stage of a recipe is the start of its file name: sft-tiny.yaml -> `rlhf sft`
STAGE_CONFIGS = {"sft": config.SFTConfig, "rm": config.RewardConfig, "dpo": config.DPOConfig, "ppo": config.PPOConfig,
                 "pretrain": config.PretrainConfig, "generate": config.GenerateConfig}


def test_the_tiny_recipes_exist():
    assert {p.name for p in CONFIGS} >= {"sft-tiny.yaml", "rm-tiny.yaml", "dpo-tiny.yaml", "ppo-tiny.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_recipe_loads_into_its_stage_config(path):
    stage = path.name.split("-")[0]
    assert stage in STAGE_CONFIGS, f"{path.name}: name it <stage>-<what>.yaml, stage one of {sorted(STAGE_CONFIGS)}"
    values = config.load_yaml(path, STAGE_CONFIGS[stage])
    assert values == {k.replace("-", "_"): v for k, v in yaml.safe_load(path.read_text()).items()}  # every line used
    cfg = dataclasses.replace(STAGE_CONFIGS[stage](), **values)  # validates
    assert cfg.model is None and cfg.data is None  # model, data and out come from the command line


def test_the_readme_and_docs_cite_only_recipes_that_exist():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    cited = set(re.findall(r"configs/([\w.-]+\.yaml)", "".join(p.read_text(encoding="utf-8") for p in pages)))
    assert cited and cited <= {p.name for p in CONFIGS}


def test_sft_recipe_runs_two_steps_with_flags_over_the_file(tiny_model_dir, demonstrations_file, tmp_path):
    from rlhf.cli import parse
    from rlhf.train import sft

    out = tmp_path / "sft"
    cfg = parse("sft", ["--config", str(ROOT / "configs" / "sft-tiny.yaml"), "--model", str(tiny_model_dir),
                        "--data", str(demonstrations_file), "--out", str(out), "--max-steps", "2", "--lr", "1e-4",
                        "--no-progress"])
    assert (cfg.batch_size, cfg.max_length, cfg.lr) == (8, 128, 1e-4)  # from the file, and the flag wins
    sft.run(cfg)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and math.isfinite(summary["train_loss"])
    assert (out / "model" / "config.json").exists()
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["batch_size"] == 8 and resolved["lr"] == 1e-4
