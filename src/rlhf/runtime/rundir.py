"""The run directory contract: config.yaml, metrics.jsonl, summary.json, model/, checkpoints/.

A run never destroys earlier work: a non-empty directory is refused unless the run resumes it
(--resume) or replaces it (--overwrite), and the refusal comes before anything is written. One
process at a time runs in a directory (`OUT/.lock`). The original config.yaml is kept on resume;
each resume records its own config as config.resume-N.yaml. With `--report-to`, what is logged
here is mirrored to TensorBoard or W&B (rlhf.runtime.tracking): every stage gets it from `log`.
With several processes every rank makes the checks and rank 0 alone writes and reports (`rlhf.runtime.dist`).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from ..config import TrainConfig, to_yaml
from . import callbacks, dist, lock, progress, tracking
from .files import append_jsonl, atomic_write_text, dumps, truncate_jsonl

CONFIG_NAME = "config.yaml"


class RunDirNotEmpty(FileExistsError):
    """The run directory holds an earlier run and the user asked neither to resume nor to overwrite."""


class RunDir:
    """The run directory of `cfg.out`, checked, locked and holding config.yaml once constructed.

    `part_of`: the run directory this one lives inside (an online DPO round): its lock covers
    this one, and the progress record keeps the outer run's context.
    """

    def __init__(self, cfg: TrainConfig, part_of: RunDir | None = None):
        self.cfg = cfg
        self.path = Path(cfg.out)
        self.checkpoints = self.path / "checkpoints"
        self.model_dir = self.path / "model"
        self.metrics_path = self.path / "metrics.jsonl"
        self.samples_path = self.path / "samples.jsonl"
        self.owns_lock = part_of is None
        if cfg.resume and cfg.overwrite:
            raise ValueError("--resume continues the run in --out and --overwrite deletes it: pass one of them")
        earlier = self._entries()
        if earlier and not (cfg.resume or cfg.overwrite):
            shown = ", ".join(earlier[:5]) + (", ..." if len(earlier) > 5 else "")
            raise RunDirNotEmpty(f"{self.path} already holds a run ({shown}): pass --resume to continue it, "
                                 "--overwrite to delete it and start again, or choose another --out")
        if earlier and cfg.overwrite and not (self.path / CONFIG_NAME).exists():
            raise RunDirNotEmpty(f"--overwrite refused: {self.path} is not empty and holds no {CONFIG_NAME}, so it is "
                                 "not an rlhf run directory; choose another --out")
        # a missing tracker library fails here, before anything is written (rank 0 alone reports)
        self.tracker = (tracking.open_tracker(getattr(cfg, "report_to", "none"), self.path, self.samples_path,
                                              dataclasses.asdict(cfg), group=part_of.path.name if part_of else None)
                        if dist.is_main() else None)
        dist.barrier()  # every rank has looked before rank 0 writes
        if self.owns_lock:
            progress.start_run()
        if dist.is_main():
            self.path.mkdir(parents=True, exist_ok=True)
            if self.owns_lock:
                lock.acquire(self.path)
            if earlier and cfg.overwrite:
                self._clear()
            self._write_config()
        dist.barrier()

    def _entries(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.name != lock.LOCK_NAME)

    def _clear(self) -> None:
        for entry in self.path.iterdir():
            if entry.name == lock.LOCK_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def _write_config(self) -> None:
        """config.yaml on a new run; on resume the original stays and this run's goes beside it."""
        original = self.path / CONFIG_NAME
        if not original.exists():
            atomic_write_text(original, to_yaml(self.cfg))
            return
        n = 1
        while (self.path / f"config.resume-{n}.yaml").exists():
            n += 1
        atomic_write_text(self.path / f"config.resume-{n}.yaml", to_yaml(self.cfg))

    def truncate_logs(self, after_step: int) -> None:
        """On resume, drop log lines written after the checkpoint (all of them with no checkpoint),
        and a torn last line, so the logs read as one uninterrupted run."""
        if not dist.is_main():
            return
        for path in (self.metrics_path, self.samples_path):
            truncate_jsonl(path, after_step)
        if self.tracker:
            self.tracker.resume_after(after_step)

    def log(self, record: dict) -> None:
        if not dist.is_main():
            return
        append_jsonl(self.metrics_path, record)
        if self.tracker:
            self.tracker.log(record)
        callbacks.logged(record)

    def replace_metrics(self, records: list[dict]) -> None:
        """metrics.jsonl rewritten whole, atomically (a run that assembles its log from parts: online
        DPO's rounds); a tracker gets every record, replacing what an earlier process sent."""
        if not dist.is_main():
            return
        atomic_write_text(self.metrics_path, "".join(dumps(record) + "\n" for record in records))
        if self.tracker:
            self.tracker.resume_after(-1)
            for record in records:
                self.tracker.log(record)

    def write_summary(self, summary: dict) -> None:
        """summary.json, the last file a stage writes: the run is over and its lock is released.
        It names the machine (`machine`: CPU, speed flags, threads) so figures are never compared blind."""
        from .device import machine_facts

        if not dist.is_main():
            return
        summary = {**summary, "machine": summary.get("machine") or machine_facts()}
        atomic_write_text(self.path / "summary.json", dumps(summary, indent=2) + "\n")
        if self.tracker:
            self.tracker.close()
        if self.owns_lock:
            lock.release(self.path)


def discard_unstarted(path) -> bool:
    """Delete the run directory `path` when the run that made it stopped before writing anything
    but config.yaml, so that a retry is not refused as "already holds a run". Only a directory this
    process locked (never another run's) and only by rank 0. The CLI and the Python API call it
    when a run whose --out was new (or empty) fails; True when it was deleted."""
    path = Path(path)
    if not dist.is_main() or not path.is_dir() or not lock.held(path):
        return False
    if {entry.name for entry in path.iterdir()} - {CONFIG_NAME, lock.LOCK_NAME}:
        return False  # metrics, checkpoints, a stage's own files: kept for --resume or a look
    lock.release(path)
    shutil.rmtree(path)
    return True
