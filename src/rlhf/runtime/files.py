"""Durable files: atomic replacement, fsync of files and of the directory after a rename, strict
JSON (non-finite numbers become null), and JSON-lines logs whose torn last line is dropped.

A rename is atomic but not durable until the directory holding it is fsynced: after a power cut
the old name can come back. Every helper that renames fsyncs the file first and the directory
after, so what a later resume reads is what the run wrote.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch


def notice(message: str) -> None:
    """A line for the user (resume points, dropped log lines): stderr, so stdout stays the result."""
    print(message, file=sys.stderr, flush=True)


def fsync_dir(path: Path) -> None:
    """Make renames and new entries in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file under `root`, then every directory, deepest first."""
    dirs = [root]
    for path in sorted(root.rglob("*")):
        if path.is_dir():
            dirs.append(path)
        else:
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for path in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(path)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a reader sees the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def json_safe(value):
    """`value` with tensors and numpy scalars as Python numbers and every NaN or infinity as None,
    recursively through dicts, lists and tuples: what strict JSON can hold."""
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    elif isinstance(value, (np.ndarray, np.generic)):
        value = value.item() if value.size == 1 else value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps(value, **kwargs) -> str:
    """Strict JSON (`allow_nan=False`) of `json_safe(value)`."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line and fsync it: a killed run loses at most the line it was writing."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def truncate_jsonl(path: Path, after_step: int) -> None:
    """Keep the lines of a step log with `step <= after_step`, rewritten atomically.

    A torn last line (the run was killed while writing it) is dropped with a notice; an unreadable
    line anywhere else is an error that names the file and the line.
    """
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").split("\n")
    kept = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it: the write was cut
                notice(f"{path}: dropped a torn last line (the run was stopped while writing it)")
                continue
            raise ValueError(f"{path}:{number}: not a JSON line; the log is damaged") from None
        if record.get("step", 0) <= after_step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))
