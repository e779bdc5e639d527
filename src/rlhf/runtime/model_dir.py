"""A model directory written atomically: `save_pretrained` writes a plain `transformers`
directory (safetensors and tokenizer) into a temporary sibling, marks it complete and renames it
into place, so a reader sees the old model or the new one, never half of one. The runtime writes
every run's `model/` through it (`Runtime.finish`); `rlhf.models.load` reads it back."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from . import dist
from .files import fsync_dir, fsync_tree
from .guard import assert_finite

COMPLETE_MARKER = "rlhf-complete.json"  # written last into every model/ that save_pretrained writes
TMP_INFIX = ".tmp-"  # save_pretrained writes `.model.tmp-PID` first


# transformers' bars of one model file operation: one per load and per save, on every command,
# saying nothing a user needs. The bars a user asks for (training, downloads) are not among them.
FILE_BARS = frozenset({"Loading weights", "Writing model shards"})


@contextlib.contextmanager
def no_file_bars():
    """transformers' "Loading weights" and "Writing model shards" bars off inside the block; every
    other bar of transformers' tqdm as it was (through any hook set before)."""
    from transformers.utils import logging as transformers_logging

    def hook(factory, args, kwargs):
        if kwargs.get("desc") in FILE_BARS:
            return transformers_logging.EmptyTqdm(*args, **kwargs)
        return previous(factory, args, kwargs) if previous is not None else factory(*args, **kwargs)

    previous = transformers_logging.set_tqdm_hook(hook)
    try:
        yield
    finally:
        transformers_logging.set_tqdm_hook(previous)


def save_pretrained(model, tokenizer, out_dir: str | os.PathLike, state_dict: dict | None = None) -> Path:
    """Save a plain `transformers` directory (LoRA adapters merged in) loadable without rlhf.

    Written atomically: into a temporary sibling directory, fsynced, marked complete
    (COMPLETE_MARKER) and renamed into place, so `out_dir` is the old model or the new one,
    never half of one. An earlier model at `out_dir` is replaced.
    With several processes rank 0 writes it and every rank returns once it is in place.
    `state_dict`: the weights to write instead of the model's own (a sharded model's, gathered on
    rank 0; the caller checks them).
    """
    if state_dict is None:
        assert_finite(model, f"the model for {out_dir}")  # NaN weights are never saved
    out = Path(out_dir)
    if not dist.is_main():
        dist.barrier()
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}{TMP_INFIX}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    with no_file_bars():
        model.save_pretrained(tmp, safe_serialization=True, **({"state_dict": state_dict} if state_dict is not None else {}))
    tokenizer.save_pretrained(tmp)
    published = publish_model_dir(tmp, out)
    dist.barrier()
    return published


def publish_model_dir(tmp: Path, out: Path) -> Path:
    """Mark the finished temporary directory `tmp` complete, fsync it and rename it to `out`
    (an earlier `out` is replaced): `out` is the old model or the new one, never half of one."""
    (tmp / COMPLETE_MARKER).write_text('{"complete": true}\n', encoding="utf-8")
    fsync_tree(tmp)
    replaced = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, replaced)
    os.replace(tmp, out)
    fsync_dir(out.parent)
    shutil.rmtree(replaced, ignore_errors=True)
    return out
