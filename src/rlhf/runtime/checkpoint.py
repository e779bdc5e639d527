"""Atomic checkpoints (checkpoints/step-N/state.pt), the random-number state they carry, and the
checks a resume makes before it trusts one.

A checkpoint holds tensors and plain values only (the RNG states converted to tensors and
lists), so it loads with `torch.load(weights_only=True)`: a crafted state.pt cannot run code.
It also holds the config fields that change the result, and a hash of them: resuming with other
values is refused, naming the fields, unless --resume-force. A sharded run's model and optimiser
are beside it in step-N/sharded/, one file per rank (rlhf.runtime.sharded_checkpoint); state.pt is
written last either way, so a step-N folder without it is a checkpoint cut short, and ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from . import callbacks, progress
from .files import fsync_dir, notice
from .guard import assert_finite
from .rundir import RunDir

CHECKPOINT_PREFIX = "step-"
STATE_NAME = "state.pt"  # written last: a checkpoint folder without it is ignored
SHARDS_DIR = "sharded"  # a sharded run's model and optimiser (rlhf.runtime.sharded_checkpoint)
METADATA_NAME = ".metadata"  # DCP's index of the shards, written once every rank has written

# Config fields that say where and how visibly a run works, not what it computes: a resume may
# change them freely. Every other field is part of the result and of the checkpoint's hash.
# (`rounds`: online DPO trains each round on its own schedule, so more rounds extend a run
# without changing the finished ones.)
RUN_ONLY_FIELDS = frozenset({
    "out", "resume", "resume_force", "overwrite", "progress", "device",
    "log_every", "save_every", "eval_every", "samples_every", "keep_checkpoints", "rounds",
    "max_bad_steps", "dist_timeout",  # when a run gives up, not what it computes
    "gradient_checkpointing",  # recomputes what the forward kept: the same gradients, less memory
    "sharding",  # where the parameters live (whole on every rank or split): the same update (tests/dist/test_fsdp2.py)
    "shard_frozen",  # whether the frozen models are split too: the same forwards (tests/dist/test_ppo_fsdp2.py)
    "report_to",  # where the metrics are mirrored, not what they are
})


class UnsafeCheckpoint(ValueError):
    """A checkpoint file that holds more than tensors and plain values."""


class ResumeMismatch(ValueError):
    """A resume whose config differs from the checkpoint's in fields that change the result."""


def rng_state() -> dict:
    """Python's, numpy's and torch's generator states as tensors and plain values."""
    version, mt_words, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(mt_words, dtype=torch.int64), "gauss_next": gauss_next},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py, nps = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss_next"]))
    np.random.set_state((nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"],
                         nps["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def result_config(cfg) -> dict:
    """The config fields that change what a run computes (all but RUN_ONLY_FIELDS), as plain values."""
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in RUN_ONLY_FIELDS}
    return json.loads(json.dumps(fields, sort_keys=True, default=str))


def saved_result_config(config_yaml: Path) -> dict:
    """The result-relevant fields of a run's config.yaml, as result_config gives them."""
    import yaml

    values = yaml.safe_load(Path(config_yaml).read_text(encoding="utf-8")) or {}
    fields = {k: v for k, v in values.items() if k not in RUN_ONLY_FIELDS}
    return json.loads(json.dumps(fields, sort_keys=True, default=str))


def config_hash(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def config_differences(saved: dict, cfg) -> list[str]:
    """'field (checkpoint X, now Y)' for each result-relevant field in which `cfg` differs from `saved`."""
    now = result_config(cfg)

    def shown(fields: dict, name: str) -> str:
        return repr(fields[name]) if name in fields else "absent"

    differing = [name for name in sorted(set(saved) | set(now))
                 if name not in saved or name not in now or saved[name] != now[name]]
    return [f"{name} (checkpoint {shown(saved, name)}, now {shown(now, name)})" for name in differing]


def check_resume_config(saved: dict, cfg, what: str) -> None:
    """Refuse to continue `what` (a checkpoint, a run) made with other result-relevant values than
    `cfg`'s, naming them, unless cfg.resume_force (then say what differs and go on)."""
    differences = config_differences(saved, cfg)
    if not differences:
        return
    listed = "; ".join(differences)
    if cfg.resume_force:
        notice(f"--resume-force: continuing {what} although the config differs ({listed})")
        return
    raise ResumeMismatch(f"cannot resume {what}: the config differs in fields that change the result ({listed}). "
                         "Resume with the same values, pass --resume-force to continue anyway, "
                         "or start a new run in another --out")


def save_checkpoint(run: RunDir, step: int, state: dict, keep: int) -> Path:
    """Write `state` (a dict of state_dicts and plain values) as checkpoints/step-N, atomically.

    Everything goes to a temporary directory first and is renamed into place, so a run killed
    mid-write leaves either the previous checkpoint or the new one, never half of one.
    """
    assert_finite(state, f"checkpoint {CHECKPOINT_PREFIX}{step}")  # NaN weights are never saved
    return commit_checkpoint(run, step, start_checkpoint(run, step), state, keep)


def checkpoint_tmp(run: RunDir, step: int) -> Path:
    """The temporary directory checkpoints/step-N is written in before it is renamed into place."""
    return run.checkpoints / f".tmp-{CHECKPOINT_PREFIX}{step}"


def start_checkpoint(run: RunDir, step: int) -> Path:
    """A fresh, empty `checkpoint_tmp` (what a killed run left there is removed)."""
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    tmp = checkpoint_tmp(run, step)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def commit_checkpoint(run: RunDir, step: int, tmp: Path, state: dict, keep: int) -> Path:
    """state.pt (`state` with the step, random state and config) written last into `tmp`, which is
    then renamed to checkpoints/step-N; the oldest checkpoints beyond `keep` are removed."""
    final = run.checkpoints / f"{CHECKPOINT_PREFIX}{step}"
    config = result_config(run.cfg)
    torch.save({**state, "step": step, "rng": rng_state(), "config": config, "config_hash": config_hash(config)},
               tmp / STATE_NAME)
    with open(tmp / STATE_NAME, "rb") as f:
        os.fsync(f.fileno())
    fsync_dir(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    fsync_dir(run.checkpoints)
    progress.record_checkpoint(step)
    callbacks.checkpointed(step, final)
    for old in list_checkpoints(run)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _complete(path: Path) -> bool:
    """checkpoints/step-N holds its state.pt (written last), and DCP's index when it holds shards."""
    shards = path / SHARDS_DIR
    return (path / STATE_NAME).exists() and (not shards.exists() or (shards / METADATA_NAME).exists())


def list_checkpoints(run: RunDir) -> list[Path]:
    if not run.checkpoints.exists():
        return []
    found = [p for p in run.checkpoints.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and _complete(p)]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def load_state(path: Path) -> dict:
    """A state.pt of tensors and plain values; anything that would need unpickling code is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        asks = f" (it asks for {found.group(1)})" if found else ""
        raise UnsafeCheckpoint(
            f"{path} holds objects other than tensors and plain values, and loading them could run code: "
            f"refused{asks}. Delete it if you did not write it; a checkpoint of an older rlhf (which pickled "
            "numpy RNG states) cannot be resumed: start that run again"
        ) from None


def load_latest_checkpoint(run: RunDir) -> dict | None:
    found = list_checkpoints(run)
    if not found:
        return None
    return load_state(found[-1] / STATE_NAME)


def resume_state(run: RunDir) -> dict | None:
    """The state to continue from when cfg.resume, after the checks, else None.

    With no checkpoint yet the run starts from step 0 and its logs are emptied; with one, the
    config must match the checkpoint's (see check_resume_config) and the logs are cut back to its
    step. Either way the user is told which.
    """
    if not run.cfg.resume:
        return None
    state = load_latest_checkpoint(run)
    if state is None:
        notice(f"--resume: {run.path} holds no checkpoint yet; starting from step 0")
        run.truncate_logs(0)
        return None
    step = state["step"]
    check_resume_config(state.get("config", {}), run.cfg, f"{run.path} from its checkpoint at step {step}")
    notice(f"--resume: continuing {run.path} from step {step} ({run.checkpoints.name}/{CHECKPOINT_PREFIX}{step})")
    run.truncate_logs(step)
    progress.record_checkpoint(step)
    return state
