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
