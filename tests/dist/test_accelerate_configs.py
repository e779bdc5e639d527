"""Every config in configs/accelerate loads with accelerate's own loader and says what its name says."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.utils import DistributedType

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
EXPECTED = {  # file -> (distributed type, processes)
    "cpu-2proc.yaml": (DistributedType.MULTI_GPU, 2),  # accelerate's torchrun launcher; gloo on a CPU (see the file)
    "multi-gpu-ddp.yaml": (DistributedType.MULTI_GPU, 8),
    "fsdp2.yaml": (DistributedType.FSDP, 8),
    "fsdp2-cpu.yaml": (DistributedType.FSDP, 2),  # rlhf's --sharding fsdp2 on two CPU processes (see the file)
    "zero2.yaml": (DistributedType.DEEPSPEED, 8),
    "zero3.yaml": (DistributedType.DEEPSPEED, 8),
}


def test_the_directory_holds_exactly_the_expected_configs():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_in_accelerate(name):
    cfg = load_config_from_file(str(CONFIGS / name))
    assert isinstance(cfg, ClusterConfig)
    kind, processes = EXPECTED[name]
    assert cfg.distributed_type == kind and cfg.num_processes == processes
    assert cfg.num_machines == 1 and cfg.use_cpu is False
    if kind == DistributedType.FSDP:
        fsdp = cfg.fsdp_config
        assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert fsdp["fsdp_reshard_after_forward"] is True and fsdp["fsdp_offload_params"] is False
    if kind == DistributedType.DEEPSPEED:
        stage = cfg.deepspeed_config["zero_stage"]
        assert stage == {"zero2.yaml": 2, "zero3.yaml": 3}[name]
        assert cfg.deepspeed_config["zero3_init_flag"] is (stage == 3)  # ZeRO-3 creates models already sharded
    assert cfg.mixed_precision in ("no", "bf16")
