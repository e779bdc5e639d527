"""Short real runs of the stage in temporary directories (never the user's --out): the time of a
step, the peak memory, and a kill-and-resume round trip.

Run A makes TRIAL_STEPS steps with a checkpoint after step CHECKPOINT_AT. Step 2 is the one timed:
past the first step's warm-up (allocations, kernel choice) and before any checkpoint write. Run B
starts from what a run killed right after that checkpoint leaves behind (A's directory without
its model and summary), resumes, and makes the last step; its weights must equal A's bit for
bit, or a long run that is interrupted does not end where it would have. (`dpo --online` keeps
its own per-round resume state, which this copy cannot fake: it gets run A only.)
On a large data set both runs read only its first rows (enough for their steps), so the doctor
stays quick; DPO's reference pass over the whole data is extrapolated from those rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import importlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import runtime
from .checks import FAIL, INFO, PASS, Check

TRIAL_STEPS, CHECKPOINT_AT = 3, 2
STAGE_MODULES = {"sft": "rlhf.train.sft", "rm": "rlhf.train.reward", "dpo": "rlhf.train.dpo", "ppo": "rlhf.train.ppo"}
# What a run killed after its checkpoint has not written yet.
NOT_YET_WRITTEN = ("model", "summary.json")


@dataclass
class Trial:
    step_seconds: float  # wall time of step 2 of run A
    peak_memory_mb: float  # peak RSS of this process (CPU) or peak CUDA memory allocated during run A
    reference_seconds: float | None  # dpo: time of the reference pass over the rows A read
    differing: list[str]  # weight tensors that differ between the resumed run and the uninterrupted one
    max_difference: float
    tensors: int


def first_rows(path: str, rows: int, out_dir: Path) -> str:
    """A copy of the first `rows` non-empty lines of a JSONL(.gz) or .txt file, else the file itself
    (Parquet and `datasets` directories are read whole)."""
    source = Path(path)
    name = source.name.removesuffix(".gz")
    if not source.is_file() or not name.endswith((".jsonl", ".txt")):
        return path
    opener = gzip.open if source.name.endswith(".gz") else open
    kept = []
    with opener(source, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                kept.append(line if line.endswith("\n") else line + "\n")
                if len(kept) >= rows:
                    break
    target = out_dir / name
    target.write_text("".join(kept), encoding="utf-8")
    return str(target)


def trial_config(cfg, out: Path, data: str, resume: bool):
    """The user's config, run for TRIAL_STEPS steps into `out`, with nothing that does not change
    the weights (evaluation, KL sampling, gold scores, samples) and one checkpoint."""
    changes = dict(out=str(out), data=data, resume=resume, max_steps=TRIAL_STEPS, save_every=CHECKPOINT_AT,
                   keep_checkpoints=2, log_every=1, progress=False, eval_data=None, eval_every=0, gold=None,
                   samples_every=0, kl_prompts=0)
    if getattr(cfg, "online", False):  # one round, sampling only the prompts its steps need
        changes.update(rounds=1, prompts_per_round=min(cfg.prompts_per_round, cfg.batch_size * cfg.grad_accum * TRIAL_STEPS))
    fields = {f.name for f in dataclasses.fields(cfg)}
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if k in fields})


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


def _step_seconds(run_dir: Path) -> float:
    """Wall time between the log lines of steps 1 and 2 (the stages log `elapsed_s` since the start)."""
    elapsed = {}
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("step") in (1, 2) and "loss" in record and "elapsed_s" in record:  # training lines only
            elapsed.setdefault(record["step"], record["elapsed_s"])
    return elapsed[2] - elapsed[1]


@contextlib.contextmanager
def _quiet():
    """The trial runs' own lines off the console: what they print and their notices on stderr
    (`--resume: continuing /tmp/rlhf-doctor-.../killed from step 2` is the doctor's business, not
    the user's). A run that fails keeps them: its error carries their end as a note."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            yield
    except BaseException as err:
        if captured.getvalue().strip():
            err.add_note(f"the trial run's output:\n{captured.getvalue()[-2000:]}")
        raise


def run_trial(stage: str, cfg, rows: int, workdir: Path, resume: bool = True) -> Trial:
    """Runs A (uninterrupted) and, with `resume`, B (killed after the checkpoint, then resumed) in `workdir`."""
    run = importlib.import_module(STAGE_MODULES[stage]).run
    data = first_rows(cfg.data, rows, workdir)
    device = runtime.pick_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    straight, killed = workdir / "straight", workdir / "killed"
    with _quiet():
        run(trial_config(cfg, straight, data, resume=False))
    peak = runtime.peak_memory_mb(device)
    summary = json.loads((straight / "summary.json").read_text(encoding="utf-8"))
    trial = Trial(_step_seconds(straight), peak, summary.get("reference_s"), [], 0.0, 0)
    if not resume:
        return trial
    shutil.copytree(straight, killed, ignore=shutil.ignore_patterns(*NOT_YET_WRITTEN))
    with _quiet():
        run(trial_config(cfg, killed, data, resume=True))
    a, b = _weights(straight / "model"), _weights(killed / "model")
    trial.differing = sorted(k for k in a.keys() | b.keys() if k not in a or k not in b or not torch.equal(a[k], b[k]))
    trial.max_difference = max((float((a[k].float() - b[k].float()).abs().max()) for k in trial.differing
                                if k in a and k in b), default=0.0)
    trial.tensors = len(a)
    return trial


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def time_check(trial: Trial, total_steps: int, step_word: str, reference_scale: float = 1.0) -> Check:
    detail = (f"{trial.step_seconds:.2f} s per {step_word} (step 2 of a real run) x {total_steps} steps "
              f"= about {_duration(trial.step_seconds * total_steps)}")
    if trial.reference_seconds is not None:
        detail += f", plus about {_duration(trial.reference_seconds * reference_scale)} for the reference pass"
    return Check("time", INFO, detail)


def memory_check(trial: Trial, device_type: str) -> Check:
    where = "peak CUDA memory allocated" if device_type == "cuda" else "peak RSS of the process"
    return Check("memory", INFO, f"{where}: {trial.peak_memory_mb / 1024:.2f} GiB")


def resume_check(trial: Trial) -> Check:
    name = "kill and resume"
    what = (f"{TRIAL_STEPS} steps straight vs killed after the step-{CHECKPOINT_AT} checkpoint and resumed: ")
    if trial.differing:
        return Check(name, FAIL, what + f"{len(trial.differing)}/{trial.tensors} weight tensors differ (max |diff| "
                                        f"{trial.max_difference:.3g}, e.g. {trial.differing[0]}): resume is not exact")
    return Check(name, PASS, what + f"all {trial.tensors} weight tensors equal bit for bit")


def resume_skipped() -> Check:
    return Check("kill and resume", INFO, "not run for dpo --online: a killed round leaves per-round state "
                                          "(round.json, pairs, the run's checkpoint after each round) that a "
                                          "copied run directory cannot fake")


def trial_failed(error: BaseException) -> list[Check]:
    message = f"the trial run failed: {type(error).__name__}: {error}"
    return [Check("time", FAIL, message), Check("kill and resume", FAIL, message)]
