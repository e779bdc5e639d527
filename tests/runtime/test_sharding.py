"""rlhf.runtime.sharding in one process (a gloo group of one, so it runs anywhere): the units it
makes, and the state it gathers from a sharded model and its optimiser, which must be what an
unsharded run saves (same names, same numbering, same values) so that checkpoints resume with
either sharding. The two-process equality is tests/dist/test_fsdp2.py."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs gloo")

sys.path.insert(0, str(Path(__file__).parent))  # for `import tiny_fsdp` under --import-mode=importlib

from tiny_fsdp import group, tiny_llama, train_step  # noqa: E402,F401  (group: a fixture)


def test_decoder_layers_are_the_units():
    from rlhf.runtime.sharding import decoder_layers

    model = tiny_llama()
    assert decoder_layers(model) == list(model.model.layers)


def test_gathered_state_is_the_unsharded_state(group):
    from rlhf.runtime import sharding

    plain = tiny_llama()
    sharded = copy.deepcopy(plain)
    sharding.shard(sharded, world=1)
    assert sharding.is_sharded(sharded.model) and not sharding.is_sharded(plain)
    assert sharded.lm_head.weight is sharded.model.embed_tokens.weight  # the tied head stays tied
    opt_plain = torch.optim.AdamW(plain.parameters(), lr=1e-2)
    opt_sharded = torch.optim.AdamW(sharded.parameters(), lr=1e-2)  # built after sharding
    for _ in range(2):
        train_step(plain, opt_plain)
        train_step(sharded, opt_sharded)

    state, expected = sharding.full_model_state(sharded), plain.state_dict()
    assert state.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(state[name], expected[name], rtol=0, atol=1e-6)
    assert "lm_head.weight" not in sharding.without_tied_copies(sharded, state)  # as transformers saves it

    optim, expected = sharding.full_optimizer_state(sharded, opt_sharded), opt_plain.state_dict()
    assert [g["params"] for g in optim["param_groups"]] == [g["params"] for g in expected["param_groups"]]
    assert optim["state"].keys() == expected["state"].keys()
    for i, values in expected["state"].items():
        for key, value in values.items():
            torch.testing.assert_close(optim["state"][i][key], value, rtol=0, atol=1e-6)

    # and back: an unsharded run's state loaded into a fresh sharded model continues alike
    resumed = tiny_llama(seed=1)
    sharding.shard(resumed, world=1)
    opt_resumed = torch.optim.AdamW(resumed.parameters(), lr=1e-2)
    # copies, as a checkpoint read from disk is (in one process the loaded model may share storage with them)
    sharding.load_full_model_state(resumed, copy.deepcopy(plain.state_dict()))
    sharding.load_full_optimizer_state(resumed, opt_resumed, copy.deepcopy(opt_plain.state_dict()))
    train_step(plain, opt_plain)
    train_step(resumed, opt_resumed)
    for name, value in sharding.full_model_state(resumed).items():
        torch.testing.assert_close(value, plain.state_dict()[name], rtol=0, atol=1e-6)


def test_clip_grad_norm_over_shards_is_torchs(group):
    from rlhf.runtime import sharding

    plain = tiny_llama()
    sharded = copy.deepcopy(plain)
    sharding.shard(sharded, world=1)
    ids = torch.arange(12).view(2, 6) % 50
    for model in (plain, sharded):
        model(input_ids=ids, labels=ids).loss.backward()
    expected = torch.nn.utils.clip_grad_norm_(list(plain.parameters()), 0.1)
    got = sharding.clip_grad_norm(list(sharded.parameters()), 0.1)
    assert not hasattr(got, "full_tensor")
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    for (name, p), q in zip(plain.named_parameters(), sharded.parameters()):
        torch.testing.assert_close(q.grad.full_tensor(), p.grad, rtol=0, atol=1e-7, msg=name)


def test_gathered_decodes_on_parameters_gathered_once(group, monkeypatch):
    # a decode is one forward per new token: inside `gathered` every unit is all-gathered once, on
    # entry, and no forward gathers again; on exit each unit is back to its shard
    from rlhf.rollout.generate import SamplingConfig, generate
    from rlhf.runtime import sharding

    plain = tiny_llama()
    sharded = copy.deepcopy(plain)
    sharding.shard(sharded, world=1)
    from torch.distributed.fsdp._fully_shard._fsdp_param_group import FSDPParamGroup  # torch 2.13's

    gathers = []  # a unit made whole from its all-gather (with one process, from its own shard)
    to_unsharded = FSDPParamGroup._to_unsharded
    monkeypatch.setattr(FSDPParamGroup, "_to_unsharded", lambda self: gathers.append(1) or to_unsharded(self))
    sampling, rows = SamplingConfig(max_new_tokens=6, temperature=1.0), [[1, 2, 3], [4, 5]]

    def decode(model):
        return generate(model, rows, sampling, eos_token_ids=[49], pad_token_id=0, row_seeds=[7, 8]).response_ids

    expected = decode(plain)
    with sharding.gathered(sharded):
        assert not any(hasattr(p, "full_tensor") for p in sharded.parameters())  # whole tensors
        once = decode(sharded)
    units = [m for m in sharded.modules() if sharding.is_sharded(m)]
    assert len(gathers) == len(units) == 3  # two decoder layers and the root, once each
    assert all(hasattr(p, "full_tensor") for p in sharded.parameters())  # back to shards
    gathers.clear()
    per_token = decode(sharded)  # without: every layer gathered again in the forward of each new token
    assert len(gathers) >= 2 * 6
    torch.testing.assert_close(once, expected, rtol=0, atol=0)
    torch.testing.assert_close(per_token, expected, rtol=0, atol=0)


def test_bf16_mixed_precision_gathers_bf16_and_keeps_fp32_shards(group):
    # `--precision bf16` where the device has it (the runtime asks only there): the forward computes
    # with bf16 parameters, the shards the optimiser steps and their gradients stay fp32
    from rlhf.runtime import sharding

    model = tiny_llama()
    sharding.shard(model, world=1, bf16=True)
    seen = []
    model.model.layers[0].mlp.register_forward_hook(lambda module, args, out: seen.append(module.up_proj.weight.dtype))
    ids = torch.arange(12).view(2, 6) % 50
    model(input_ids=ids.to(torch.long), labels=ids).loss.backward()
    assert seen == [torch.bfloat16]
    assert {p.dtype for p in model.parameters()} == {p.grad.dtype for p in model.parameters()} == {torch.float32}


def _fsdp2_runtime(monkeypatch, **cfg):
    """A runtime that believes it runs under a launcher with --sharding fsdp2 (one gloo process)."""
    from types import SimpleNamespace

    from rlhf import runtime

    monkeypatch.setattr(runtime.context, "_sharding_of", lambda cfg: "fsdp2")
    monkeypatch.setattr(runtime.dist, "launched", lambda: True)
    return runtime.init(SimpleNamespace(**{"precision": "fp32", "seed": 0, "device": "cpu", "sharding": "fsdp2",
                                           "lora_r": 0, **cfg}), run_dir=False)


@pytest.mark.parametrize("shard_frozen", [True, False])
def test_the_frozen_reference_is_sharded_unless_told_not_to(group, monkeypatch, shard_frozen):
    from rlhf.runtime import sharding

    rt = _fsdp2_runtime(monkeypatch, shard_frozen=shard_frozen)
    reference = tiny_llama().requires_grad_(False)
    rt.prepare_frozen(reference=reference)
    assert sharding.is_sharded(reference.model) == shard_frozen
    assert rt.lockstep == shard_frozen
    with rt.gathered(reference):  # whole either way inside
        assert not any(hasattr(p, "full_tensor") for p in reference.parameters())


def test_no_mixed_precision_where_bf16_is_emulated(group, monkeypatch):
    # on a CPU without avx512_bf16 or AMX `--precision bf16` computes in fp32 (rlhf.runtime.device):
    # the runtime shards without a mixed precision policy there
    import rlhf.runtime.device as device_module
    from rlhf.runtime import sharding

    calls = []
    monkeypatch.setattr(sharding, "shard", lambda model, world, bf16=False: calls.append(bf16) or model)
    monkeypatch.setattr(device_module, "_cpu_has_bf16", lambda: False)
    emulated = _fsdp2_runtime(monkeypatch, precision="bf16")
    emulated.prepare(tiny_llama())
    monkeypatch.setattr(device_module, "_cpu_has_bf16", lambda: True)
    _fsdp2_runtime(monkeypatch, precision="bf16").prepare(tiny_llama())
    assert emulated.precision == "fp32" and calls == [False, True]


def test_the_sharded_reference_goes_back_to_its_shards_after_its_log_probs(group, monkeypatch):
    """A frozen model has no backward to put its root unit back: reference_logprobs does, so the
    embeddings and head are not held whole on every rank between steps."""
    from rlhf.data.records import Rollout
    from rlhf.train.ppo_build import reference_logprobs

    rt = _fsdp2_runtime(monkeypatch, shard_frozen=True)
    reference = tiny_llama().requires_grad_(False)
    rt.prepare_frozen(reference=reference)
    rollout = Rollout(prompt_ids=torch.tensor([[1, 2, 3]]), prompt_mask=torch.ones(1, 3, dtype=torch.long),
                      response_ids=torch.tensor([[4, 5]]), response_mask=torch.ones(1, 2, dtype=torch.long),
                      ended=torch.tensor([True]), logprobs=None)
    root_weight = lambda: reference.model.embed_tokens.weight  # noqa: E731
    with torch.no_grad():
        reference.model(input_ids=torch.tensor([[1, 2, 3]]))
    assert not hasattr(root_weight(), "full_tensor")  # a plain forward leaves the root unit gathered
    with torch.no_grad():
        logp = reference_logprobs(reference, None, rollout, temperature=1.0)
    assert logp.shape == (1, 2) and torch.isfinite(logp).all()
    assert hasattr(root_weight(), "full_tensor")  # back to its shard (a DTensor)
