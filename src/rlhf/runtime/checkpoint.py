"""Atomic checkpoints (checkpoints/step-N/state.pt) and the random-number state they carry."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from .rundir import RunDir

CHECKPOINT_PREFIX = "step-"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run: RunDir, step: int, state: dict, keep: int) -> Path:
    """Write `state` (a dict of state_dicts and plain values) as checkpoints/step-N, atomically.

    Everything goes to a temporary directory first and is renamed into place, so a run killed
    mid-write leaves either the previous checkpoint or the new one, never half of one.
    """
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    final = run.checkpoints / f"{CHECKPOINT_PREFIX}{step}"
    tmp = run.checkpoints / f".tmp-{CHECKPOINT_PREFIX}{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save({**state, "step": step, "rng": rng_state()}, tmp / "state.pt")
    with open(tmp / "state.pt", "rb") as f:
        os.fsync(f.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in list_checkpoints(run)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run: RunDir) -> list[Path]:
    if not run.checkpoints.exists():
        return []
    found = [p for p in run.checkpoints.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and (p / "state.pt").exists()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def load_latest_checkpoint(run: RunDir) -> dict | None:
    found = list_checkpoints(run)
    if not found:
        return None
    return torch.load(found[-1] / "state.pt", map_location="cpu", weights_only=False)
