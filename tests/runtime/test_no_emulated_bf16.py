"""On a CPU without AVX512-BF16 or AMX, bf16 is emulated (about 45 times slower than fp32 on an
AVX2 EPYC): nothing may compute in bf16 there, whatever `--precision` says. The shipped base is
stored in bf16, so its weights must be upcast on load.

The CPU's flags are faked through `rlhf.runtime.device._cpu_has_bf16`; a global forward hook
records the dtype every module outputs."""

from __future__ import annotations

import json

import pytest
import torch

import rlhf.runtime.device as device_module
from rlhf.config import PPOConfig, SFTConfig
from rlhf.models.load import load_causal_lm
from rlhf.resources import BASE_MODEL


@pytest.fixture
def output_dtypes():
    seen: set[torch.dtype] = set()

    def record(module, inputs, output):
        tensors = output if isinstance(output, (tuple, list)) else [output]
        seen.update(t.dtype for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point())

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    yield seen
    handle.remove()


def _cpu(has_bf16: bool, monkeypatch):
    monkeypatch.setattr(device_module, "_cpu_has_bf16", lambda: has_bf16)


def test_the_shipped_base_is_stored_in_bf16_and_loaded_in_fp32():
    assert json.loads((BASE_MODEL / "config.json").read_text())["dtype"] == "bfloat16"
    model = load_causal_lm(BASE_MODEL)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_effective_precision_follows_the_cpu(monkeypatch):
    _cpu(False, monkeypatch)
    assert device_module.effective_precision("bf16", torch.device("cpu")) == "fp32"
    assert device_module.effective_precision("fp32", torch.device("cpu")) == "fp32"


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="bf16 autocast on CPU needs oneDNN")
def test_the_hook_sees_bf16_where_the_cpu_has_it(monkeypatch, output_dtypes):
    """The control: with the flags present, bf16 autocast is on and the hook sees bf16."""
    _cpu(True, monkeypatch)
    layer = torch.nn.Linear(4, 4)
    with device_module.autocast("bf16", torch.device("cpu")):
        layer(torch.randn(2, 4))
    assert torch.bfloat16 in output_dtypes


def test_sft_and_ppo_with_precision_bf16_compute_in_fp32_on_an_avx2_cpu(
        monkeypatch, output_dtypes, tiny_model_dir, demonstrations_file, tmp_path):
    from rlhf.train import ppo, sft

    _cpu(False, monkeypatch)
    sft_out = sft.run(SFTConfig(model=str(tiny_model_dir), data=str(demonstrations_file), out=str(tmp_path / "sft"),
                                max_steps=2, batch_size=4, max_length=32, progress=False, precision="bf16"))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Once upon a time {i}"}) + "\n" for i in range(4)))
    ppo.run(PPOConfig(model=str(sft_out), data=str(prompts), out=str(tmp_path / "ppo"), reward="rlhf.demo.oracle:gold_reward", algo="grpo", max_steps=1, batch_size=2, num_samples=2,
        minibatch_size=4, max_new_tokens=4, max_length=48, precision="bf16", progress=False, save_every=0))
    assert output_dtypes and output_dtypes <= {torch.float32}, output_dtypes


def test_reward_model_scoring_with_precision_bf16_stays_fp32_on_an_avx2_cpu(monkeypatch, output_dtypes, tiny_model_dir):
    from rlhf.models.reward import RewardModel, load_reward_backbone

    _cpu(False, monkeypatch)
    model, tokenizer, input_format = load_reward_backbone(tiny_model_dir)
    scorer = RewardModel(model, tokenizer, input_format, max_length=32, precision="bf16")
    scorer.score(["Once upon a time"], [" a happy dog"])
    assert output_dtypes and output_dtypes <= {torch.float32}, output_dtypes


AVX2_EPYC = """processor\t: 0
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse2 avx avx2 fma
processor\t: 1
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse2 avx avx2 fma
"""


def test_machine_facts_name_the_cpu_and_its_speed_flags():
    facts = device_module.machine_facts(AVX2_EPYC)
    assert facts["cpu"] == "AMD EPYC 7B12"
    assert facts["flags"] == {"avx2": True, "avx512f": False, "avx512_bf16": False, "amx_bf16": False,
                              "amx_tile": False}
    assert facts["bf16_native"] is False and facts["threads"] == torch.get_num_threads()


def test_every_run_summary_names_the_machine(tiny_model_dir, demonstrations_file, tmp_path):
    from rlhf.train import sft

    sft.run(SFTConfig(model=str(tiny_model_dir), data=str(demonstrations_file), out=str(tmp_path / "sft"),
                      max_steps=1, batch_size=4, max_length=32, progress=False))
    machine = json.loads((tmp_path / "sft" / "summary.json").read_text())["machine"]
    assert machine["cpu"] == device_module.machine_facts()["cpu"] and set(machine["flags"]) == set(device_module.SPEED_FLAGS)
