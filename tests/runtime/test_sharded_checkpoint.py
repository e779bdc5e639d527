"""rlhf.runtime.sharded_checkpoint in one process (a gloo group of one): a sharded model and its
optimiser written through torch.distributed.checkpoint load into an unsharded model equal, and a
crafted checkpoint (DCP's pickled index, or a pickled value) cannot run code on load. The
multi-process writes and reshards are tests/dist/test_fsdp2.py."""

from __future__ import annotations

import copy
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs gloo")

sys.path.insert(0, str(Path(__file__).parent))  # for `import tiny_fsdp` under --import-mode=importlib

from tiny_fsdp import group, tiny_llama, train_step  # noqa: E402,F401  (group: a fixture)


def test_sharded_save_loads_into_an_unsharded_model(group, tmp_path):
    from rlhf.runtime import sharded_checkpoint, sharding

    model = tiny_llama(0)
    sharding.shard(model, world=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        train_step(model, optimizer)
    holders = {"model": model, "optimizer": optimizer}
    sharded_checkpoint.save(sharded_checkpoint.holder_states(holders, [model]), tmp_path / "ck")

    fresh = tiny_llama(1)  # other weights, an optimiser that never stepped
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    sharded_checkpoint.load(tmp_path / "ck", {"model": fresh, "optimizer": fresh_optimizer}, [fresh])
    for name, value in sharding.full_model_state(model).items():
        assert torch.equal(fresh.state_dict()[name], value), name
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight  # still tied
    saved, loaded = sharding.full_optimizer_state(model, optimizer), fresh_optimizer.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for index, moments in saved["state"].items():
        for key, value in moments.items():
            assert torch.equal(loaded["state"][index][key], value), (index, key)
    copy_of = copy.deepcopy(fresh)  # and it trains on from there as the sharded model does
    train_step(model, optimizer)
    train_step(fresh, fresh_optimizer)
    for name, value in sharding.full_model_state(model).items():
        assert torch.allclose(fresh.state_dict()[name], value, atol=1e-6), name
    assert any(not torch.equal(a, b) for a, b in zip(copy_of.parameters(), fresh.parameters()))


class RunsCode:
    """A value whose unpickling would make a directory (any code could run there instead)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_a_crafted_index_is_refused_without_running_it(tmp_path):
    from rlhf.runtime.checkpoint import UnsafeCheckpoint
    from rlhf.runtime.sharded_checkpoint import SafeReader

    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / ".metadata").write_bytes(pickle.dumps(RunsCode(tmp_path / "ran")))
    with pytest.raises(UnsafeCheckpoint, match="posix.mkdir|os.mkdir"):
        SafeReader(tmp_path / "ck").read_metadata()
    assert not (tmp_path / "ran").exists()


def test_a_crafted_value_is_refused_without_running_it(tmp_path):
    import torch.distributed.checkpoint as dcp

    from rlhf.runtime.checkpoint import UnsafeCheckpoint
    from rlhf.runtime.sharded_checkpoint import safe_load

    dcp.save({"weight": torch.ones(3), "betas": RunsCode(tmp_path / "ran")}, checkpoint_id=tmp_path / "ck", no_dist=True)
    assert not (tmp_path / "ran").exists()
    target = {"weight": torch.zeros(3), "betas": None}
    with pytest.raises(UnsafeCheckpoint, match="betas"):
        safe_load(target, tmp_path / "ck", no_dist=True)
    assert not (tmp_path / "ran").exists()
    safe = {"weight": torch.zeros(3), "betas": (0.9, 0.95)}  # plain values load as before
    dcp.save(safe | {"weight": torch.ones(3)}, checkpoint_id=tmp_path / "plain", no_dist=True)
    target = {"weight": torch.zeros(3), "betas": None}
    safe_load(target, tmp_path / "plain", no_dist=True)
    assert torch.equal(target["weight"], torch.ones(3)) and target["betas"] == (0.9, 0.95)
