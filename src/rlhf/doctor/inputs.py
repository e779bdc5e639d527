"""Every input a command names, checked before its stage is imported or anything is written.

`check_inputs(command, cfg)` (called by `rlhf.cli.main` before any stage, and by `rlhf doctor`)
raises the first problem it finds:

1. data: each file the config names is read with the stage's own reader, so a bad row is
   reported as `file:line: problem` (with --skip-bad-rows, bad rows are dropped as the stage
   will drop them, and only a file left with none is an error). The readers need no torch, so
   these, the commonest mistakes, are reported within a second of starting; then the training
   data must fill one batch over the processes (`rlhf.data.batches`: the message names the flag
   and a batch size that fits), so a 5-pair export fails at once, not after the model loaded;
2. models: each model directory exists, holds safetensors weights and a tokenizer that loads
   and fits its embedding matrix (`rlhf.models.compat`); the models that read the policy's token
   ids (the reference, the critic) share the policy's tokenizer; a `module:function` scorer
   imports. In `rlhf ppo --algo ppo` the critic starts from a causal reward model, which must
   then share the policy's tokenizer too (pass --critic to start it elsewhere); an encoder reward
   model (e.g. all-MiniLM-L6-v2) reads text with its own tokenizer and is only checked for itself.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Callable

from ..data.batches import check_batch
from ..logs import quieted

from ..data.formats import (read_comparisons, read_demonstrations, read_documents, read_feedback, read_preferences,
                            read_prompts)

# command -> {data field: the reader its stage reads it with}
DATA_READERS: dict[str, dict[str, Callable]] = {
    "pretrain": {"data": read_documents, "eval_data": read_documents},
    "sft": {"data": read_demonstrations, "eval_data": read_demonstrations},
    "rm": {"data": read_preferences, "eval_data": read_comparisons},
    "dpo": {"data": read_comparisons, "eval_data": read_comparisons},  # --loss kto and --online: dpo_readers
    "ppo": {"data": read_prompts, "eval_data": read_prompts},
    "generate": {"data": read_prompts},
    "eval": {"data": read_prompts},
    "eval policy": {"data": read_prompts},
    "eval rm": {"data": read_comparisons},
}

# How a model option relates to the policy (the command's --model, checked first).
POLICY, OWN, SHARES, SCORER = "policy", "own", "shares the policy's tokenizer", "scorer"
MODEL_OPTIONS: dict[str, dict[str, str]] = {
    "pretrain": {"model": POLICY},
    "sft": {"model": POLICY},
    "rm": {"model": OWN},
    "dpo": {"model": POLICY, "reference": SHARES, "labeler": SCORER},
    "ppo": {"model": POLICY, "reference": SHARES, "critic": SHARES, "reward": SCORER, "gold": SCORER},
    "generate": {"model": POLICY, "label": SCORER},
    "eval": {"model": POLICY, "reference": SHARES, "judge": SCORER, "scorers": SCORER},
    "eval policy": {"model": POLICY, "reference": SHARES, "judge": SCORER, "scorers": SCORER},
    "eval rm": {"model": OWN},
}


def dpo_readers(cfg) -> dict[str, Callable]:
    if cfg.online:
        return {"data": read_prompts, "eval_data": read_prompts}
    if cfg.loss == "kto":
        return {"data": read_feedback, "eval_data": read_feedback}  # as `rlhf dpo --loss kto` reads them
    return DATA_READERS["dpo"]


def _quiet_skips():
    """The readers log one warning per file with skipped rows; the stage reads the file again and
    logs it then, so the check stays silent."""
    return quieted("rlhf.data.formats", logging.ERROR)


def check_data(command: str, cfg) -> None:
    """Read every data file of `cfg` with its stage's reader (DataError: `file:line: problem`),
    then check that the training data fill a batch (`check_fill`)."""
    readers = dpo_readers(cfg) if command == "dpo" else DATA_READERS.get(command, {})
    training = None
    for field, read in readers.items():
        path = getattr(cfg, field, None)
        if path is None:
            continue
        # The stages drop bad rows of the training data only; held-out data is read strictly.
        skip = field == "data" and getattr(cfg, "skip_bad_rows", False)
        files = cfg.data_files if field == "data" and hasattr(type(cfg), "data_files") else (path,)  # eval rm: several
        with _quiet_skips():
            records = [read(file, skip_bad_rows=skip) for file in files]
        if field == "data":
            training = records[0]
    if training is not None:
        check_fill(command, cfg, training)


# training command -> what its batches are made of (rlhf ppo: prompts per rollout step)
BATCH_UNITS = {"pretrain": "documents", "sft": "demonstrations", "rm": "preferences", "dpo": "comparisons",
               "ppo": "prompts"}


def check_fill(command: str, cfg, records) -> None:
    """Refuse training data that cannot fill one batch of `cfg.batch_size` over the processes a
    launcher started (WORLD_SIZE), naming the flag to change (rlhf.data.batches.check_batch).

    Counted as the stage counts them, after --skip-bad-rows: pretrain, at most one block of
    --max-length tokens per max_length bytes of the corpus (a token holds at least one byte; the
    stage checks the exact count once it has tokenized, still before it writes anything); sft,
    demonstrations (--packing packs them into fewer rows: the stage checks those too); rm,
    preferences; dpo, comparisons (kto: completions); ppo, prompts. `rlhf dpo --online` sizes
    each round's batch to the pairs it labelled, so only the division among processes is checked."""
    if command not in BATCH_UNITS:
        return
    world = int(os.environ.get("WORLD_SIZE", "1"))
    source = Path(str(cfg.data)).name
    if command == "dpo" and cfg.online:
        check_batch(cfg.batch_size, cfg.batch_size, world)
        return
    n, what = len(records), BATCH_UNITS[command]
    if command == "dpo" and cfg.loss == "kto":
        what = "completions (thumbs up and down)"
    if command == "pretrain":
        n = sum(len(d.text.encode("utf-8")) + 2 for d in records) // cfg.max_length  # + EOS, a tokenizer's prefix
        what = f"blocks of --max-length {cfg.max_length} tokens at most"
    check_batch(n, cfg.batch_size, world, what, source)


def locate_models(command: str, cfg) -> None:
    """Each model directory `cfg` names (scorers aside) exists, or is a Hub id that resolves:
    checked without torch (`rlhf.models.hub` needs none), so a mistyped --model is named as fast
    as a missing --data file; the checks of `check_models` load tokenizers, which takes torch."""
    from pathlib import Path

    from ..models.hub import looks_like_hub_id, resolve_hub_model

    for field, relation in MODEL_OPTIONS.get(command, {}).items():
        value = getattr(cfg, field, None)
        for spec in value if isinstance(value, tuple) else (value,):
            if relation == SCORER or not isinstance(spec, str) or Path(spec).expanduser().is_dir():
                continue
            flag = "--" + field.replace("_", "-")
            if not looks_like_hub_id(spec):
                raise FileNotFoundError(f"{flag}: model directory {spec!r} does not exist")
            try:
                resolve_hub_model(spec, getattr(cfg, "trust_remote_code", False))
            except FileNotFoundError as err:  # HubModelError: not cached and not fetchable, with what to do
                raise FileNotFoundError(f"{flag}: {err}") from None


def check_models(command: str, cfg) -> None:
    """Check every model directory and scorer of `cfg` (see the module docstring)."""
    locate_models(command, cfg)
    from ..labelers.pairs import is_named_labeler
    from ..models import compat
    from ..rollout.scorers import is_callable_spec, load_callable

    trust = getattr(cfg, "trust_remote_code", False)
    policy_tokenizer = None
    for field, relation in MODEL_OPTIONS.get(command, {}).items():
        value = getattr(cfg, field, None)
        flag = "--" + field.replace("_", "-")
        for spec in value if isinstance(value, tuple) else (value,):
            if spec is None or (relation == SCORER and is_named_labeler(spec)):
                continue
            if relation == SCORER and is_callable_spec(spec):
                load_callable(spec)  # ValueError naming the spec when it does not import
                continue
            tokenizer = compat.check_model_dir(spec, flag, trust)
            if relation == POLICY:
                policy_tokenizer = tokenizer
            elif relation == SHARES and policy_tokenizer is not None:
                compat.check_shared_tokenizer(policy_tokenizer, spec, flag, trust)
    if command == "ppo" and cfg.algo == "ppo" and cfg.critic is None and not is_callable_spec(cfg.reward) \
            and compat.is_causal(cfg.reward, trust):
        compat.check_shared_tokenizer(
            policy_tokenizer, cfg.reward, "--reward", trust,
            why=f"PPO's critic starts from a causal reward model and values the policy's tokens: pass --critic DIR "
                f"(e.g. --critic {cfg.model}) to start it from a model with the policy's tokenizer")


def check_inputs(command: str, cfg) -> None:
    """Raise the first problem with the inputs `cfg` names (DataError and other ValueErrors,
    FileNotFoundError), data first; commands without data or models pass."""
    check_data(command, cfg)
    check_models(command, cfg)


def pin_hub_models(command: str, cfg):
    """`cfg` with each Hub model id and dataset name it names pinned to the commit it resolved to
    (`org/name@<sha>`), so config.yaml says which weights and rows the run read (rlhf.models.hub,
    rlhf.data.hub). Imports only when a field
    holds something that looks like a Hub id (the check stays fast without)."""
    from ..data.hub import looks_like_dataset_id, pin_dataset

    data = {name: pin_dataset(getattr(cfg, name)) for name in DATA_READERS.get(command, {})
            if isinstance(getattr(cfg, name, None), str) and looks_like_dataset_id(getattr(cfg, name))}
    if data:
        cfg = dataclasses.replace(cfg, **data)
    fields = [name for name in MODEL_OPTIONS.get(command, {}) if _may_be_hub_id(getattr(cfg, name, None))]
    if not fields:
        return cfg
    from ..labelers.pairs import is_named_labeler
    from ..models.hub import pin_revisions

    return pin_revisions(cfg, fields, is_model=lambda value: not is_named_labeler(value))


def _may_be_hub_id(value) -> bool:
    values = value if isinstance(value, tuple) else (value,)
    return any(isinstance(v, str) and v.count("/") <= 1 and ":" not in v for v in values)
