"""bench/scaling.py's memory and time model on hand-worked cases; the GPU recipes in
configs/recipes/ load into their stage's config and quote the figures the script computes; and
docs/scaling.md is what the script writes."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import yaml

from rlhf import config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import scaling  # noqa: E402

RECIPES = sorted((ROOT / "configs" / "recipes").glob("*.yaml"))
STAGE_CONFIGS = {"sft": config.SFTConfig, "rm": config.RewardConfig, "dpo": config.DPOConfig,
                 "ppo": config.PPOConfig, "grpo": config.PPOConfig}
TINY = scaling.Shape(hidden=4, layers=1, heads=2, kv_heads=1, intermediate=8, vocab=10, tied=True)


def test_parameter_counts_by_hand_and_of_the_published_models():
    # kv_dim = 1 head x 2 dims = 2; q 4*4+4, k 4*2+2, v 4*2+2, o 4*4 = 56; MLP 3*4*8 = 96; norms 2*4 = 8
    assert TINY.layer_params() == 56 + 96 + 8
    assert TINY.params() == 160 + 10 * 4 + 4  # one layer, the tied embedding, the final norm
    # Qwen2.5's model cards: 0.49B, 7.61B, 72.7B
    assert scaling.MODELS["0.5B"].params() == 494_032_768
    assert scaling.MODELS["7B"].params() == 7_615_616_512
    assert round(scaling.MODELS["72B"].params() / 1e9, 1) == 72.7


def test_7b_under_zero3_on_8_gpus_holds_16_bytes_per_parameter_over_8():
    p = scaling.MODELS["7B"].params()
    zero3 = scaling.state_bytes(p, "ZeRO-3", 8)
    assert zero3 == {"params": 2 * p / 8, "grads": 2 * p / 8, "optimizer": 12 * p / 8}
    assert sum(zero3.values()) == 16 * p / 8 == 15_231_233_024
    fsdp2 = scaling.state_bytes(p, "FSDP2", 8)  # fp32 shards of parameters and gradients, Adam m and v
    assert fsdp2 == {"params": 4 * p / 8, "grads": 4 * p / 8, "optimizer": 8 * p / 8}
    assert sum(scaling.state_bytes(p, "DDP", 8).values()) == 16 * p  # nothing sharded
    with pytest.raises(ValueError, match="unknown strategy"):
        scaling.state_bytes(p, "ZeRO-2", 8)


def test_activations_and_kv_cache_by_hand():
    # per layer and token 12*4 + 4*2 + 8*8 = 120 bytes; logits 6 * vocab 10 = 60; 3 tokens
    assert scaling.activation_bytes(TINY, 3, checkpointing=False) == 3 * (120 + 60)
    assert scaling.activation_bytes(TINY, 3, checkpointing=True) == 3 * (2 * 4 + 120 + 60)  # layer input + one layer
    assert scaling.activation_bytes(TINY, 3, checkpointing=False, logits=False) == 3 * 120
    assert scaling.kv_cache_bytes(TINY, 2, 5) == 2 * 5 * 1 * 2 * 2 * 2  # keys and values, bf16


def test_memory_per_gpu_adds_frozen_models_sharded_with_the_strategy():
    shape, p = scaling.MODELS["7B"], scaling.MODELS["7B"].params()
    dpo = scaling.workload("dpo", "7B")
    ddp, zero3 = (scaling.memory_per_gpu(shape, dpo, s, 8) for s in ("DDP", "ZeRO-3"))
    assert ddp["frozen"] == 2 * p and zero3["frozen"] == 2 * p / 8  # the reference, bf16
    assert zero3["total"] == pytest.approx(sum(v for k, v in zero3.items() if k != "total"))
    ppo = scaling.memory_per_gpu(shape, scaling.workload("ppo", "7B"), "ZeRO-3", 8)
    assert ppo["params"] + ppo["grads"] + ppo["optimizer"] == 2 * 16 * p / 8  # policy and critic


def test_step_time_is_six_params_tokens_at_the_assumed_mfu():
    gpu, shape = scaling.GPU(), scaling.MODELS["0.5B"]
    sft = scaling.workload("sft", "0.5B")  # no checkpointing at 0.5B
    seconds = scaling.step_seconds(shape, sft, "DDP", 8, gpu)
    p = shape.params()
    assert sft.tokens == 128 * 2048
    assert seconds["compute"] == pytest.approx(6 * p * sft.tokens / (8 * gpu.bf16_flops * gpu.mfu))
    assert seconds["comm"] == pytest.approx(2 * 7 / 8 * 2 * p / gpu.intra_node_bus)  # one bf16 all-reduce
    assert seconds["total"] == max(seconds["compute"], seconds["comm"]) and seconds["generate"] == 0
    one = scaling.step_seconds(shape, sft, "DDP", 1, gpu)
    assert one["comm"] == 0 and one["compute"] == pytest.approx(8 * seconds["compute"])
    assert scaling.step_seconds(shape, scaling.workload("grpo", "0.5B"), "DDP", 8, gpu)["generate"] > 0


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_each_gpu_recipe_loads_and_quotes_the_modelled_figures(path):
    stage = path.name.split("-")[0]
    values = config.load_yaml(path, STAGE_CONFIGS[stage])
    assert values == {k.replace("-", "_"): v for k, v in yaml.safe_load(path.read_text()).items()}  # every line used
    cfg = dataclasses.replace(STAGE_CONFIGS[stage](), **values)  # validates
    assert cfg.model is None and cfg.data is None  # local paths the user gives on the command line
    assert cfg.device == "cuda" and cfg.precision == "bf16"
    if stage in ("ppo", "grpo"):
        assert cfg.algo == stage
    header = path.read_text().split("\n")
    assert "NEEDS A GPU" in header[1] and "LOCAL copies of the model and the data" in header[1]
    assert "# " + scaling.recipe_line(path) in header  # what `python bench/scaling.py` writes
    assert f"--config configs/recipes/{path.name}" in path.read_text()


def test_there_is_a_recipe_for_each_stage():
    assert {p.name.split("-")[0] for p in RECIPES} == {"dpo", "grpo", "ppo", "rm", "sft"}


def test_docs_scaling_md_is_what_the_script_writes():
    measured_path = ROOT / "docs" / "scaling-measured.json"
    measured = json.loads(measured_path.read_text()) if measured_path.exists() else None
    assert (ROOT / "docs" / "scaling.md").read_text() == scaling.render(measured)
