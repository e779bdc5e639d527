"""The fields every training command shares, the sampling fields of the commands that sample, one way
to report invalid values, and YAML in and out."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml


def check_fields(cfg, checks: dict[str, bool], hint: str = "") -> None:
    """Raise one ValueError naming every field of `cfg` whose check is False, with its value:
    "invalid value for batch_size=0, lr=-1.0" (then " (hint)" when given); nothing when all pass."""
    bad = [f"{name}={getattr(cfg, name)!r}" for name, ok in checks.items() if not ok]
    if bad:
        raise ValueError("invalid value for " + ", ".join(bad) + (f" ({hint})" if hint else ""))


@dataclass(frozen=True)
class SamplingFields:
    """How responses are sampled from a policy: the same names, defaults and help in every command
    that samples (ppo, generate, eval policy). A config may declare one again to say what it means
    there (ppo's temperature); the field keeps its place. The config must have `max_length`."""

    max_new_tokens: int = 48  # response tokens at most
    temperature: float = 1.0  # sampling temperature; 0 = greedy
    top_k: int = 0  # sample among the k most likely tokens; 0 = all
    top_p: float = 1.0  # nucleus sampling threshold; 1 = all

    def sampling_checks(self, greedy: bool = True) -> dict[str, bool]:
        """The checks of these fields, for check_fields; greedy=False refuses temperature 0."""
        return {"max_new_tokens": 1 <= self.max_new_tokens < self.max_length,
                "temperature": self.temperature >= 0 if greedy else self.temperature > 0,
                "top_k": self.top_k >= 0,
                "top_p": 0 < self.top_p <= 1}


@dataclass(frozen=True)
class TrainConfig:
    """Fields shared by every training command."""

    model: str | None = None  # model directory in Hugging Face format (local; the Hub is never contacted)
    data: str | None = None  # training data file (JSONL[.gz], Parquet, `datasets` dir, .txt where it applies)
    eval_data: str | None = None  # held-out data for evaluation during and after training
    out: str = "runs/run"  # run directory: config.yaml, metrics.jsonl, summary.json, model/, checkpoints/
    seed: int = 0  # seed for initialisation, data order and sampling
    max_steps: int = -1  # optimiser steps to run; -1 = as many as `epochs` gives
    epochs: float = 1.0  # passes over the training data (fractions allowed) when max_steps is -1
    batch_size: int = 8  # examples per micro-batch
    grad_accum: int = 1  # micro-batches per optimiser step
    lr: float = 1e-4  # peak learning rate (AdamW)
    weight_decay: float = 0.0  # AdamW weight decay on matrices (never on norms and biases)
    warmup_steps: int = 0  # linear warm-up steps before the cosine decay
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    max_grad_norm: float = 1.0  # gradient clipping by global norm; 0 = off
    max_bad_steps: int = 5  # steps with a NaN/inf loss or gradient are skipped; stop after this many in a row
    max_length: int = 512  # tokens per training sequence (longer ones are truncated)
    precision: Literal["fp32", "bf16"] = "bf16"  # bf16 = autocast on CPUs/GPUs that support it (fp32 master weights)
    resume: bool = False  # continue from the newest checkpoint in `out`
    overwrite: bool = False  # clear a non-empty `out` (an earlier run's files) and start again
    resume_force: bool = False  # resume even when the result-relevant config differs from the checkpoint's
    save_every: int = 200  # checkpoint every N optimiser steps (0 = only at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    dist_timeout: float = 600.0  # with several processes: seconds a collective waits for the others before the run fails
    sharding: Literal["none", "fsdp2"] = "none"  # with several processes: none = every rank holds the whole model (data parallel); fsdp2 = parameters, gradients and optimiser state split over the ranks (torch FSDP2); the same result
    shard_frozen: bool = True  # with --sharding fsdp2: shard the frozen models (the reference and reward models of ppo and online dpo) like the trained ones; --no-shard-frozen keeps a whole copy on every rank (more memory, no gathers in their forwards)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (transformers' own, non-reentrant): less memory, about a third more compute
    log_every: int = 10  # log metrics every N optimiser steps
    eval_every: int = 0  # evaluate every N optimiser steps (0 = only at the end)
    lora_r: int = 0  # LoRA rank; 0 = full fine-tuning
    lora_alpha: float = 16.0  # LoRA scaling numerator
    lora_dropout: float = 0.0  # dropout on the LoRA branch
    device: str = "auto"  # auto (cuda if available, else cpu), cpu, cuda, cuda:N
    trust_remote_code: bool = False  # allow model code shipped inside the model directory
    skip_bad_rows: bool = False  # drop malformed data rows (counted in summary.json) instead of stopping
    progress: bool = True  # show a progress bar
    report_to: Literal["none", "tensorboard", "wandb"] = "none"  # also send the logged metrics (and samples) to TensorBoard (OUT/tensorboard/) or Weights & Biases (OUT/wandb/, offline unless WANDB_MODE says otherwise); metrics.jsonl is written either way

    def __post_init__(self):
        checks = {
            "batch_size": self.batch_size >= 1,
            "grad_accum": self.grad_accum >= 1,
            "lr": self.lr is None or self.lr >= 0,  # None: a per-model default (rm); 0: a dry run that moves nothing (`rlhf doctor`'s PPO step)
            "max_length": self.max_length >= 8,
            "epochs": self.epochs > 0,
            "max_steps": self.max_steps == -1 or self.max_steps >= 1,
            "lora_r": self.lora_r >= 0,
            "min_lr_ratio": 0 <= self.min_lr_ratio <= 1,
            "warmup_steps": self.warmup_steps >= 0,
            "save_every": self.save_every >= 0,
            "log_every": self.log_every >= 1,
            "max_bad_steps": self.max_bad_steps >= 1, "dist_timeout": self.dist_timeout > 0,
        }
        check_fields(self, checks)
        check_fields(self, {"sharding": not (self.sharding == "fsdp2" and self.lora_r > 0)},
                     "LoRA under --sharding fsdp2 is not supported yet: use --sharding none")


def load_yaml(path: str | Path, cls) -> dict:
    """Fields from a YAML file, checked against `cls`'s field names and typed as its flags are
    (`rlhf.config.fields.coerce`). Errors name the file, the line and the field."""
    from .fields import coerce, field_types

    text = Path(path).read_text(encoding="utf-8")
    try:
        values = yaml.safe_load(text) or {}
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config file must be a mapping of field: value")
    lines = {str(key.value).replace("-", "_"): key.start_mark.line + 1 for key, _ in root.value} if root else {}
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    types = field_types(cls)
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {unknown} for {cls.__name__}")
    typed = {}
    for name, value in values.items():
        try:
            typed[name] = coerce(value, types[name])
        except ValueError as err:
            raise ValueError(f"{path}:{lines.get(name, '?')}: {name}: {err}") from None
    return typed


def to_yaml(cfg) -> str:
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
