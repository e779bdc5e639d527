"""The run directory contract: config.yaml, metrics.jsonl, summary.json, model/, checkpoints/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..config import TrainConfig, to_yaml


class RunDir:
    """The run directory contract: config.yaml, metrics.jsonl, summary.json, model/, checkpoints/."""

    def __init__(self, cfg: TrainConfig):
        self.path = Path(cfg.out)
        self.checkpoints = self.path / "checkpoints"
        self.model_dir = self.path / "model"
        if not cfg.resume and self.checkpoints.exists() and any(self.checkpoints.iterdir()):
            raise FileExistsError(
                f"{self.path} already holds checkpoints: pass --resume to continue that run, or choose another --out"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
        self.metrics_path = self.path / "metrics.jsonl"
        if not cfg.resume and self.metrics_path.exists():
            self.metrics_path.unlink()

    def truncate_metrics(self, after_step: int) -> None:
        """On resume, drop lines logged after the checkpoint so the log reads as one run."""
        if not self.metrics_path.exists():
            return
        kept = [
            line
            for line in self.metrics_path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= after_step
        ]
        self.metrics_path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")

    def log(self, record: dict) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(_plain(record)) + "\n")

    def write_summary(self, summary: dict) -> None:
        _atomic_write_text(self.path / "summary.json", json.dumps(_plain(summary), indent=2) + "\n")


def _plain(record: dict) -> dict:
    return {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in record.items()}


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
