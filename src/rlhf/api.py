"""The Python API: every command is also a function, on the same code path as the CLI.

    import rlhf

    sft = rlhf.sft(model="runs/pretrain/model", data=[{"prompt": "Hi", "completion": " there"}, ...],
                   out="runs/my-sft", max_steps=50)
    dpo = rlhf.dpo(rlhf.DPOConfig(model=str(sft.model_dir), beta=0.1), data=pairs, out="runs/my-dpo")
    print(dpo.summary["eval_reward_accuracy"])

Each function takes a config object (`rlhf.SFTConfig(...)`, validated as the flags are), keyword
fields instead of or on top of it (keywords win), and `data` / `eval_data` as a path, a list of
dicts, or a `datasets.Dataset`. In-memory rows are written once to a content-addressed JSONL file
in the cache (`$RLHF_CACHE`, default `~/.cache/rlhf/data/`), so `config.yaml` names a file that
holds exactly the rows the run read and a rerun from it reads them again. Then the same preflight
as `rlhf <command>` checks the inputs before anything is written (bad rows name file and line),
the stage's `run(cfg)` runs, and the result holds the run directory, the model directory and the
summary.

Callbacks (`on_step(record)`, `on_eval(record)`, `on_checkpoint(step, path)`) see the same
figures as metrics.jsonl; one returning False stops the run cleanly after the current step
(rlhf.runtime.callbacks).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

DATA_FIELDS = ("data", "eval_data")


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What a stage run from Python leaves: where it wrote and what it measured."""

    command: str
    config: Any  # the resolved config the run used (as its config.yaml)
    out: Path  # the run directory (or the output file of generate / eval)
    model_dir: Path | None  # the model the run made (None for generate and eval)
    summary: dict  # summary.json (or the evaluation report)


def cache_dir() -> Path:
    """Where in-memory data are written for a run to read: $RLHF_CACHE/data, else ~/.cache/rlhf/data."""
    root = os.environ.get("RLHF_CACHE") or Path.home() / ".cache" / "rlhf"
    return Path(root) / "data"


def rows_file(rows: Iterable[dict], name: str = "rows") -> Path:
    """`rows` (dicts, or a `datasets.Dataset`) as a JSONL file named by the hash of its content:
    the same rows give the same file, so a run's config.yaml keeps naming what it read."""
    from .runtime.files import atomic_write_text

    lines = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{name}: row {i} is a {type(row).__name__}, not a dict of fields")
        lines.append(json.dumps(row, ensure_ascii=False, sort_keys=True))
    if not lines:
        raise ValueError(f"{name}: no rows")
    text = "\n".join(lines) + "\n"
    path = cache_dir() / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return path


def as_data_path(value, name: str):
    """A config's data value from a path, a Hub/dataset name, a list of dicts or a `datasets.Dataset`."""
    if value is None or isinstance(value, (str, os.PathLike)):
        return None if value is None else str(value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, os.PathLike)) for v in value):
        return tuple(str(v) for v in value)  # several files (`rlhf eval rm --data a.jsonl b.jsonl`)
    return str(rows_file(value, name))


def make_config(command: str, config=None, **fields):
    """The command's config: `config` (or the class's defaults) with `fields` replacing its values,
    in-memory data written to the cache, validated by the config class as the CLI's flags are."""
    from . import cli, config as configs

    cls = getattr(configs, cli.COMMANDS[command][0])
    if config is not None and not isinstance(config, cls):
        raise TypeError(f"rlhf.{API_NAMES.get(command, command)} takes a {cls.__name__}, not a {type(config).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {unknown}")
    for name in DATA_FIELDS:
        if name in fields:
            fields[name] = as_data_path(fields[name], f"{command.replace(' ', '-')}-{name}")
    if "data" in fields and command == "eval rm" and isinstance(fields["data"], str):
        fields["data"] = (fields["data"],)
    return dataclasses.replace(config, **fields) if config is not None else cls(**fields)


def run_command(command: str, config=None, *, on_step: Callable | None = None, on_eval: Callable | None = None,
                on_checkpoint: Callable | None = None, **fields) -> RunResult:
    """Run `rlhf <command>` from Python: config, preflight, the stage, its result (see the module docstring)."""
    from . import cli
    from .config.fields import missing_required
    from .runtime import callbacks
    from .doctor.inputs import check_inputs, pin_hub_models

    cfg = make_config(command, config, **fields)
    missing = missing_required(cfg)
    if missing:
        raise ValueError(f"rlhf.{API_NAMES.get(command, command)} needs {', '.join(missing)}")
    check_inputs(command, cfg)  # the CLI's preflight: bad data or models fail before anything is written
    cfg = pin_hub_models(command, cfg)  # config.yaml names the exact Hub commit
    stage = importlib.import_module(cli.COMMANDS[command][1])
    fresh = cli.fresh_run_dir(command, cfg)
    try:
        with callbacks.active(on_step, on_eval, on_checkpoint):
            out = Path(stage.run(cfg))
    except Exception:
        cli.discard_unstarted(fresh)  # a run that failed at its start leaves no folder behind, as from the CLI
        raise
    if out.name == "model" and (out.parent / "summary.json").exists():  # a training stage: OUT/model
        run_dir, model_dir = out.parent, out
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    else:  # generate writes a file; eval a JSON report (or prints only)
        run_dir, model_dir = out, None
        summary = json.loads(out.read_text(encoding="utf-8")) if out.suffix == ".json" and out.is_file() else {}
    return RunResult(command, cfg, run_dir, model_dir, summary)


# function name -> command
API_COMMANDS = {"pretrain": "pretrain", "sft": "sft", "rm": "rm", "dpo": "dpo", "ppo": "ppo", "generate": "generate",
                "evaluate": "eval policy", "evaluate_rm": "eval rm"}
API_NAMES = {command: name for name, command in API_COMMANDS.items()}


def _command_function(name: str, command: str) -> Callable[..., RunResult]:
    def run(config=None, *, data=None, eval_data=None, on_step=None, on_eval=None, on_checkpoint=None,
            **fields) -> RunResult:
        given = {k: v for k, v in (("data", data), ("eval_data", eval_data)) if v is not None}
        return run_command(command, config, on_step=on_step, on_eval=on_eval, on_checkpoint=on_checkpoint,
                           **given, **fields)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = (f"`rlhf {command}` from Python: a config object and/or its fields as keywords; `data` and "
                   "`eval_data` as a path, a list of dicts or a datasets.Dataset; callbacks on_step, on_eval, "
                   "on_checkpoint (False stops the run). Returns a RunResult (rlhf.api).")
    return run


pretrain = _command_function("pretrain", "pretrain")
sft = _command_function("sft", "sft")
rm = _command_function("rm", "rm")
dpo = _command_function("dpo", "dpo")
ppo = _command_function("ppo", "ppo")
generate = _command_function("generate", "generate")
evaluate = _command_function("evaluate", "eval policy")
evaluate_rm = _command_function("evaluate_rm", "eval rm")
