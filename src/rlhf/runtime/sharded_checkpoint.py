"""A sharded model's checkpoint through `torch.distributed.checkpoint` (DCP): every rank writes its
own shard of the model and optimiser state, in parallel, and no rank ever holds the whole of it.

A checkpoint of a `--sharding fsdp2` run is `checkpoints/step-N/` holding `sharded/` (DCP's files:
`__<rank>_0.distcp` per rank and a `.metadata` index written by rank 0 once every rank has written)
and `state.pt`, rank 0's file of everything else (schedule, step, random state, config; the
names of the holders in `sharded/` under "sharded"). All of it is written into the checkpoint's
temporary directory and renamed into place after the last shard, so `state.pt` in `step-N/` is the
marker of a whole checkpoint, as for an unsharded run (rlhf.runtime.checkpoint).

DCP reshards on load: each rank reads the parts of the saved shards that its own shard covers,
whatever the process count that wrote them, and an unsharded run (one process, or data-parallel)
reads whole tensors. The parameters are named as the model names them (the optimiser's state too),
so a checkpoint written by 2 processes resumes with 1, 2 or 4.

Loading runs no code from the files. DCP reads tensors with `torch.load(weights_only=True)`, but
unpickles its `.metadata` with a plain `pickle.load` and non-tensor values (an optimiser's betas)
with `torch.load(weights_only=False)` (torch 2.13): here the index goes through an unpickler that
admits only DCP's own metadata classes, a `torch.Size`, dtypes and layouts, and the values through
`weights_only=True`. A file asking for anything else is refused (`UnsafeCheckpoint`).
"""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader, FileSystemWriter

from . import dist
from .checkpoint import METADATA_NAME, UnsafeCheckpoint
from .files import fsync_dir
from .guard import non_finite_entries

_METADATA_CLASSES = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
        "BytesStorageMetadata", "ChunkStorageMetadata", "_MEM_FORMAT_ENCODING"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},  # a layout by its name, as weights_only loading allows
    "torch": {"Size"},
    "pathlib": {"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"},  # the checkpoint_id it was saved as
}


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's `.metadata` (dataclasses of names, sizes and offsets), and nothing else."""

    def find_class(self, module: str, name: str):
        if name in _METADATA_CLASSES.get(module, ()):
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise UnsafeCheckpoint(f"the sharded checkpoint's {METADATA_NAME} asks for {module}.{name}, which is not "
                               "DCP metadata, and unpickling it could run code: refused. Delete the checkpoint if "
                               "you did not write it")


class SafeReader(FileSystemReader):
    """DCP's file reader with `.metadata` read through `_MetadataUnpickler`."""

    def read_metadata(self, *args, **kwargs):
        rank = kwargs.get("rank")
        name = METADATA_NAME if rank is None else f"__{rank}{METADATA_NAME}"
        with self.fs.create_stream(self.fs.concat_path(self.path, name), "rb") as stream:
            metadata = _MetadataUnpickler(stream).load()
        if getattr(metadata, "storage_meta", None) is not None:
            metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's load planner with the non-tensor values loaded `weights_only`."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        try:
            plain = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as err:
            raise UnsafeCheckpoint(f"a value of the sharded checkpoint ({read_item.dest_index.fqn}) is not a tensor or "
                                   f"a plain value, and loading it could run code: refused ({err})") from None
        again = io.BytesIO()  # the parent unpickles without weights_only: hand it what was just read safely
        torch.save(plain, again)
        again.seek(0)
        super().load_bytes(read_item, again)


# ---------------------------------------------------------------- state dicts of models and optimisers


def _model_of(optimizer: torch.optim.Optimizer, models: list[torch.nn.Module]) -> torch.nn.Module:
    params = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for model in models:
        if any(id(p) in params for p in model.parameters()):
            return model
    raise ValueError("a sharded checkpoint's optimiser must be saved and resumed with its model")


def holder_states(holders: dict, models: list[torch.nn.Module]) -> dict:
    """name -> the state dict of each model and optimiser in `holders`, keyed by parameter names:
    on a sharded model each rank's shard (DTensors), on an unsharded one whole tensors. `models`:
    the models the optimisers update. An optimiser that has not stepped gets its (zero) state
    first, so that a load has tensors to fill."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    states = {}
    for name, value in holders.items():
        if isinstance(value, torch.nn.Module):
            states[name] = get_model_state_dict(value)
        else:
            states[name] = get_optimizer_state_dict(_model_of(value, models), value)
    return states


def non_finite(states: dict) -> list[str]:
    """The names of non-finite entries in any rank's shard of `states`, the same list on every
    rank (collective), so that every rank refuses the checkpoint together."""
    def local(value):
        if hasattr(value, "to_local"):
            return value.to_local()
        if isinstance(value, dict):
            return {k: local(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [local(v) for v in value]
        return value

    return sorted({name for names in dist.gather_objects(non_finite_entries(local(states))) for name in names})


def save(states: dict, directory: Path) -> None:
    """Every rank writes its shard of `states` into `directory` (`__<rank>_0.distcp`), then rank 0
    writes `.metadata`; fsynced. Collective: on return every rank's file is written."""
    import torch.distributed.checkpoint as dcp

    dcp.save(states, storage_writer=FileSystemWriter(directory, sync_files=True))
    if dist.is_main():
        fsync_dir(directory)


def safe_load(states: dict, directory: Path, **kwargs) -> None:
    """`dcp.load` through `SafeReader` and `SafeLoadPlanner`. DCP reports a failure on any rank as
    a `CheckpointException` (a BaseException, which escapes `except Exception`): a refused file is
    raised as the `UnsafeCheckpoint` it is, on every rank."""
    import torch.distributed.checkpoint as dcp

    kwargs.setdefault("no_dist", not torch.distributed.is_initialized())
    try:
        with warnings.catch_warnings():  # one process is what an unsharded resume means, not a guess to warn about
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(states, storage_reader=SafeReader(directory), planner=SafeLoadPlanner(), **kwargs)
    except dcp.CheckpointException as err:
        refused = [exc for exc, _ in err.failures.values() if isinstance(exc, UnsafeCheckpoint)]
        if refused:
            raise refused[0] from None
        raise


def load(directory: Path, holders: dict, models: list[torch.nn.Module]) -> None:
    """Each model and optimiser in `holders` loaded in place from the sharded checkpoint in
    `directory`, resharded to this run's process count (or whole, unsharded). Collective."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    states = holder_states(holders, models)
    safe_load(states, directory)
    for name, value in holders.items():
        if isinstance(value, torch.nn.Module):
            set_model_state_dict(value, states[name])
        else:
            set_optimizer_state_dict(_model_of(value, models), value, states[name])
