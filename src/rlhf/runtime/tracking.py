"""Experiment tracking beside metrics.jsonl: `--report-to tensorboard|wandb|none`.

metrics.jsonl stays the record of a run; a tracker only mirrors it, so no stage has tracking code
of its own. `RunDir.log` hands each metrics record to the run's `Tracker`, and the sample
responses a stage appends to samples.jsonl (the PPO family's prompt, response and score) are read
back from that file as they appear and sent as a table: a TensorBoard text panel, or a
`wandb.Table`.

The libraries are optional extras, imported only when chosen, and checked when the run directory
is opened, so a missing one fails before anything is written or loaded:
- tensorboard: `torch.utils.tensorboard.SummaryWriter`, event files under OUT/tensorboard/
  (`tensorboard --logdir OUT`; a resumed run purges the events after its checkpoint, as the
  metrics.jsonl lines after it are dropped);
- wandb: a run under OUT/wandb/, offline unless the user chose otherwise with WANDB_MODE (then
  `wandb sync OUT/wandb/offline-run-*` uploads it); project from WANDB_PROJECT, else "rlhf".
"""

from __future__ import annotations

import importlib
import json
import math
import os
from pathlib import Path

KINDS = ("none", "tensorboard", "wandb")
# the module each tracker needs, and the extra of pyproject.toml that installs it
MODULES = {"tensorboard": "torch.utils.tensorboard", "wandb": "wandb"}
SAMPLE_TAG = "samples"


class TrackerMissing(ImportError):
    """--report-to names a tracker whose library is not installed."""


def import_tracker_module(kind: str):
    """The library behind `kind`, or TrackerMissing naming the extra that installs it."""
    try:
        return importlib.import_module(MODULES[kind])
    except ImportError as err:
        raise TrackerMissing(f"--report-to {kind} needs the `{kind}` package, which is not installed: "
                             f"pip install 'rlhf[{kind}]' (or pip install {kind}), or pass --report-to none "
                             f"({err})") from None


def scalars_of(record: dict) -> dict[str, float]:
    """The numbers of one metrics record (`step` aside): what a tracker can plot."""
    return {key: float(value) for key, value in record.items()
            if key != "step" and isinstance(value, (int, float))}


def sample_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Column names (first-seen order, `step` left out) and cells as text for a list of sample rows."""
    columns = list(dict.fromkeys(key for row in rows for key in row if key != "step"))

    def text(value) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, float) and math.isfinite(value):
            return f"{value:.4g}"
        return json.dumps(value, ensure_ascii=False)

    return columns, [[text(row.get(c, "")) for c in columns] for row in rows]


def markdown_table(columns: list[str], cells: list[list[str]]) -> str:
    """A Markdown table (TensorBoard renders text summaries as Markdown); `|` and newlines escaped."""
    def cell(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in cells]
    return "\n".join(lines)


class TensorBoardBackend:
    """Scalars and sample tables as TensorBoard events in `run_path`/tensorboard/."""

    def __init__(self, run_path: Path, config: dict, group: str | None, purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(run_path) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```",
                             global_step=purge_step or 0)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()  # a killed run keeps every step it logged, as metrics.jsonl does

    def log_samples(self, step: int, columns: list[str], cells: list[list[str]]) -> None:
        self.writer.add_text(SAMPLE_TAG, markdown_table(columns, cells), global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbBackend:
    """Scalars and `wandb.Table`s of samples in a W&B run kept under `run_path`/wandb/."""

    def __init__(self, run_path: Path, config: dict, group: str | None, purge_step: int | None):
        import wandb

        self.wandb = wandb
        mode = os.environ.get("WANDB_MODE") or "offline"  # never a network call unless the user asked for one
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "rlhf", name=Path(run_path).name,
                              group=group, dir=str(run_path), config=config, mode=mode, reinit="create_new",
                              job_type="resume" if purge_step is not None else None)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def log_samples(self, step: int, columns: list[str], cells: list[list[str]]) -> None:
        self.run.log({SAMPLE_TAG: self.wandb.Table(columns=columns, data=cells)}, step=step)

    def close(self) -> None:
        self.run.finish()


BACKENDS = {"tensorboard": TensorBoardBackend, "wandb": WandbBackend}


class Tracker:
    """Mirrors one run directory's metrics.jsonl and samples.jsonl to a tracker.

    Constructed when the run directory opens (the library is imported then); the backend itself
    opens at the first record, once a resume has said from which step the events continue.
    """

    def __init__(self, kind: str, run_path: Path, samples_path: Path, config: dict, group: str | None = None):
        if kind not in BACKENDS:
            raise ValueError(f"--report-to {kind!r}: choose one of {', '.join(KINDS)}")
        import_tracker_module(kind)
        self.kind, self.run_path, self.samples_path = kind, Path(run_path), Path(samples_path)
        self.config, self.group = config, group
        self.backend = None
        self.purge_step: int | None = None
        self.samples_read = self._samples_size()  # lines already there belong to the run being resumed
        self.records = 0

    def _samples_size(self) -> int:
        return self.samples_path.stat().st_size if self.samples_path.exists() else 0

    def _open(self):
        if self.backend is None:
            self.backend = BACKENDS[self.kind](self.run_path, self.config, self.group, self.purge_step)
        return self.backend

    def resume_after(self, step: int) -> None:
        """The logs were cut back to `step` (a resume): later events of the earlier process are dropped."""
        self.purge_step = step + 1
        self.samples_read = self._samples_size()

    def log(self, record: dict) -> None:
        """One metrics record (after any samples written since the last one, so steps only grow)."""
        self.log_new_samples()
        self.records += 1
        scalars = scalars_of(record)
        if scalars:
            self._open().log(int(record.get("step", self.records)), scalars)

    def log_new_samples(self) -> None:
        """The complete lines appended to samples.jsonl since the last call, one table per step."""
        if self._samples_size() <= self.samples_read:
            return
        with open(self.samples_path, "rb") as f:
            f.seek(self.samples_read)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next call
        self.samples_read += len(complete)
        by_step: dict[int, list[dict]] = {}
        for line in complete.decode("utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                by_step.setdefault(int(row.get("step", 0)), []).append(row)
        for step, rows in sorted(by_step.items()):
            self._open().log_samples(step, *sample_table(rows))

    def close(self) -> None:
        self.log_new_samples()
        if self.backend is not None:
            self.backend.close()
            self.backend = None


def open_tracker(kind: str, run_path: Path, samples_path: Path, config: dict, group: str | None = None) -> Tracker | None:
    """The run's tracker for `--report-to kind`; None for "none" (nothing is imported or written)."""
    if kind == "none":
        return None
    return Tracker(kind, run_path, samples_path, config, group)
