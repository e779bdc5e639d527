"""The runtime object: what a stage runs on, in one place.

    rt = runtime.init(cfg)                    # seed, device, precision, ranks, the run directory
    model = rt.prepare(model)                 # replicas equal (and, later, sharded): the stage never knows
    resumed = rt.resume(model=model, optimizer=opt, scheduler=sched)   # None, or the step and saved values
    ...
    rt.checkpoint(step, model=model, optimizer=opt, scheduler=sched, tokens=n)
    rt.finish(model, tokenizer, {"stage": "sft", ...})                 # model/ + summary.json

A *state holder* is anything with `state_dict()` / `load_state_dict()` (a model, an optimiser, a
scheduler, a guard, a KL controller), or a list of them; any other keyword is a plain value
(a token count, the wall time so far) stored as it is. `rt.checkpoint` writes them through
`rlhf.runtime.checkpoint` (atomic, `weights_only`, the config hash); `rt.resume` checks the
config, cuts the logs back, loads each holder in place and returns the plain values.

Sharding plugs in here (`--sharding`, rlhf.runtime.sharding): `prepare` is where a model is
wrapped (rank 0's weights broadcast to every replica, then, under `fsdp2`, `fully_shard` per
decoder layer and on the root), `reduce_gradients` is where gradients meet (FSDP2 has already
summed them in the backward), `clip_gradients` takes the norm over every rank's shard, and
`checkpoint` has every rank write its shard of a sharded model and optimiser in parallel
(`torch.distributed.checkpoint`, rlhf.runtime.sharded_checkpoint), which `resume` reshards to any
process count or reads whole into an unsharded run; `finish` gathers the full model on rank 0,
which writes `model/` as an unsharded run would. For the online stages: `prepare_frozen` shards
the frozen models (a reference, a reward model), `gathered` holds a sharded policy whole for a
decode, `trainable` names a sharded model's shards, and `lockstep` says that every rank must run
as many forwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import callbacks, dist, sharding
from .checkpoint import (SHARDS_DIR, checkpoint_tmp, commit_checkpoint, list_checkpoints, load_latest_checkpoint,
                         resume_state, save_checkpoint, set_rng_state, start_checkpoint)
from .guard import NonFiniteError, assert_finite, non_finite_entries
from .model_dir import save_pretrained
from .device import autocast, effective_precision, peak_memory_mb, pick_device, seed_everything
from .progress import record_step
from .rundir import RunDir


def _is_holder(value: Any) -> bool:
    return hasattr(value, "state_dict") and hasattr(value, "load_state_dict")


@dataclass
class Resumed:
    """Where a resumed run continues: the step of its checkpoint and the plain values saved with it."""

    step: int
    values: dict = field(default_factory=dict)

    def get(self, name: str, default=None):
        return self.values.get(name, default)


class Runtime:
    """Device, precision, seed, ranks and collectives, the run directory (and its tracker) of one
    stage's run. Made by `init(cfg)`; see the module docstring."""

    def __init__(self, cfg, run_dir: RunDir | None, device: torch.device, t_start: float):
        self.cfg = cfg
        self.run_dir = run_dir
        self.device = device
        self.t_start = t_start
        self.precision = effective_precision(getattr(cfg, "precision", "fp32"), device)
        self.dist = dist  # the collectives (sum_all, gather_objects, ...): one process or several
        self._sharded: list[torch.nn.Module] = []  # the models `prepare` sharded (FSDP2)
        self._frozen: dict[str, tuple[int, int]] = {}  # prepare_frozen's models: (parameters, this rank's)

    # ------------------------------------------------------------ who and where

    @property
    def rank(self) -> int:
        return dist.rank()

    @property
    def world_size(self) -> int:
        return dist.world_size()

    @property
    def is_main(self) -> bool:
        return dist.is_main()

    @property
    def sharding(self) -> str:
        """The sharding in use: the config's `sharding` (or the launcher's FSDP2 config) with
        several processes; "none" alone."""
        return _sharding_of(self.cfg) if dist.launched() else "none"

    @property
    def path(self) -> Path:
        return self.run_dir.path

    def autocast(self):
        """bf16 autocast where the config asks and the device has it; else nothing."""
        return autocast(getattr(self.cfg, "precision", "fp32"), self.device)

    def elapsed(self) -> float:
        """Seconds since `init`."""
        return time.perf_counter() - self.t_start

    def part(self, cfg) -> "Runtime":
        """The runtime of a run inside this one (an online DPO round): its own run directory in
        `cfg.out`, under this run's lock; the same device, clock and random stream (not re-seeded)."""
        part = Runtime(cfg, RunDir(cfg, part_of=self.run_dir), self.device, self.t_start)
        part._sharded = self._sharded  # the same models: one sharded by a part stays sharded for the run
        return part

    # ------------------------------------------------------------ models and gradients

    def prepare(self, *models: torch.nn.Module):
        """Every replica of each model starts from rank 0's weights (whatever drew their random
        parts: a LoRA init, a fresh head), with gradient checkpointing where the config asks; under
        `--sharding fsdp2` each is then sharded over the ranks (in place: build the optimiser
        after; with `--precision bf16` where the device has it natively, FSDP2's mixed precision:
        bf16 gathers and compute, fp32 gradient reduction and shards). Returns the model (or the
        tuple of models) to train."""
        for model in models:
            if model is not None and self.is_sharded(model):
                sharding.reshard(model)  # sharded before (an online round): its parameters named as its shards again
                continue
            if model is None:
                continue
            if getattr(self.cfg, "gradient_checkpointing", False) and not enable_activation_checkpointing(model):
                raise ValueError(f"--gradient-checkpointing: {type(model).__name__} holds no transformers model")
            dist.broadcast_parameters(model)
            if self.sharding == "fsdp2":
                self._sharded.append(sharding.shard(model, self.world_size, bf16=self.precision == "bf16"))
        return models[0] if len(models) == 1 else models

    def prepare_frozen(self, **models: torch.nn.Module | None) -> None:
        """The frozen models that take part in training, by name (PPO's reference and reward
        model, online DPO's reference and labelling reward model), sharded like the trained ones
        under `--sharding fsdp2` unless the config says `shard_frozen: false` (then each rank
        keeps a whole copy: more memory, no gather in their forwards). No broadcast: every rank
        loaded them from the same files. Their root unit (embeddings, final norm, head) stays
        gathered after a forward, as a trained model's does until its backward, unless the caller
        puts it back (`sharding.reshard`, as reward scoring does after each call). Every forward
        of a sharded model is a collective: each rank must run as many (see `lockstep`). What
        each rank holds of each is recorded for summary.json (`frozen_models`)."""
        shard = self.sharding == "fsdp2" and getattr(self.cfg, "shard_frozen", True)
        for name, model in models.items():
            if model is None:
                continue
            if shard and not self.is_sharded(model):
                self._sharded.append(sharding.shard(model, self.world_size, bf16=self.precision == "bf16"))
            self._frozen[name] = sharding.parameter_counts(model)

    def is_sharded(self, model: torch.nn.Module) -> bool:
        """Whether `prepare` or `prepare_frozen` sharded `model` (its forwards are collectives)."""
        return any(model is m for m in self._sharded)

    @property
    def lockstep(self) -> bool:
        """Whether every forward and backward of a model is a collective (a sharded model gathers
        each layer in it): then every rank must run as many, a rank without rows of its own
        running one that changes nothing (rlhf.train.ppo_update)."""
        return bool(self._sharded)

    def gathered(self, *models):
        """A context in which each sharded model of `models` holds its whole parameters, gathered
        once on entry and resharded on exit (rlhf.runtime.sharding.gathered): for a decode, whose
        forwards then cost no collective. Nothing happens to a model that is not sharded."""
        return sharding.gathered(*[m for m in models if self.is_sharded(m)])

    def trainable(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        """The parameters of `model` that train, in its order; for a sharded model its shards (the
        ones its optimiser steps and whose gradients to clip), after putting back to its shard a
        unit that a forward without gradients left gathered."""
        if self.is_sharded(model):
            sharding.reshard(model)
        return [p for p in model.parameters() if p.requires_grad]

    def reduce_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """The gradients of `params` summed over the ranks (each rank's loss is already divided by
        the global count): the update one process makes. A sharded parameter's gradient was
        already summed (reduce-scattered) in the backward pass."""
        replicated = [p for p in params if not hasattr(p, "full_tensor")]  # DTensors: sharded
        if replicated or not self._sharded:
            dist.sum_gradients(replicated)

    def clip_gradients(self, params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
        """Clip the gradients of `params` to a global norm of `max_norm` (0: no clipping); returns
        the norm before clipping, over every rank's shard when the model is sharded."""
        return sharding.clip_grad_norm(params, max_norm if max_norm > 0 else float("inf"))

    def _sharded_owner(self, value) -> torch.nn.Module | None:
        """The sharded model `value` is, or whose parameters the optimiser `value` updates."""
        for model in self._sharded:
            if value is model:
                return model
            if isinstance(value, torch.optim.Optimizer):
                params = {id(p) for p in model.parameters()}
                if any(id(p) in params for group in value.param_groups for p in group["params"]):
                    return model
        return None

    def _state_of(self, value: Any):
        """A (replicated) holder's state, as rank 0 saves it."""
        if _is_holder(value):
            return value.state_dict()
        if isinstance(value, (list, tuple)) and value and all(_is_holder(v) for v in value):
            return [self._state_of(v) for v in value]
        return value

    def _load_into(self, value: Any, state, name: str) -> None:
        owner = self._sharded_owner(value) if self._sharded else None
        if owner is not None and value is owner:
            sharding.load_full_model_state(owner, state)
        elif owner is not None:
            sharding.load_full_optimizer_state(owner, value, state)
        elif _is_holder(value):
            value.load_state_dict(state)
        elif isinstance(value, (list, tuple)):
            if len(value) != len(state):
                raise ValueError(f"the checkpoint holds {len(state)} {name}, this run has {len(value)}")
            for holder, s in zip(value, state):
                self._load_into(holder, s, name)

    # ------------------------------------------------------------ checkpoints

    def resume(self, **holders) -> Resumed | None:
        """With --resume and a checkpoint: the config checked, the logs cut back to its step, each
        state holder loaded in place, the random state restored; returns the step and the plain
        values saved beside them. None when the run starts from step 0."""
        state = resume_state(self.run_dir)
        if state is None:
            return None
        in_shards = set(state.get("sharded", ()))  # the holders saved by every rank in sharded/ (DCP)
        missing = [name for name, holder in holders.items()
                   if holder is not None and name not in state and name not in in_shards]
        if missing:  # refused before any holder is touched
            raise ValueError(f"the checkpoint of {self.path} holds no {', '.join(map(repr, missing))}: it was written "
                             "by another kind of run or an older rlhf; start a new run in another --out")
        from_shards = {name: holder for name, holder in holders.items() if holder is not None and name in in_shards}
        if from_shards:  # resharded to this run's process count, or read whole when unsharded
            from . import sharded_checkpoint  # torch.distributed.checkpoint: almost a second to import
            models = self._sharded + [h for h in holders.values() if isinstance(h, torch.nn.Module)]
            sharded_checkpoint.load(list_checkpoints(self.run_dir)[-1] / SHARDS_DIR, from_shards, models)
        for name, holder in holders.items():
            if holder is not None and name not in in_shards:
                self._load_into(holder, state[name], name)
        set_rng_state(state["rng"])
        record_step(state["step"])
        values = {k: v for k, v in state.items()
                  if k not in holders and k not in ("step", "rng", "config", "config_hash", "sharded")}
        return Resumed(state["step"], values)

    def checkpoint(self, step: int, *, keep: int | None = None, **holders) -> None:
        """checkpoints/step-N with every holder's state and every plain value; it resumes with any
        process count and sharding. Unsharded, rank 0 writes one copy of the replicated state; under
        `--sharding fsdp2` every rank writes its shard of the model and optimiser (DCP, see
        rlhf.runtime.sharded_checkpoint) and rank 0 the rest. `keep`: the newest checkpoints left
        on disk (default: the config's keep_checkpoints; 0 keeps all). Every rank calls it."""
        keep = getattr(self.cfg, "keep_checkpoints", 0) if keep is None else keep
        holders = {name: value for name, value in holders.items() if value is not None}
        if self._sharded:
            self._checkpoint_sharded(step, keep, holders)
        elif dist.is_main():
            save_checkpoint(self.run_dir, step, {name: self._state_of(value) for name, value in holders.items()}, keep)

    def _checkpoint_sharded(self, step: int, keep: int, holders: dict) -> None:
        from . import sharded_checkpoint  # torch.distributed.checkpoint: almost a second to import

        sharded = {name: value for name, value in holders.items() if self._sharded_owner(value) is not None}
        shards = sharded_checkpoint.holder_states(sharded, self._sharded)
        plain = {name: self._state_of(value) for name, value in holders.items() if name not in sharded}
        what = f"checkpoint step-{step}"
        bad = sharded_checkpoint.non_finite(shards)  # every rank's shard, agreed: every rank stops together
        if bad:
            raise NonFiniteError(f"refusing to save {what}: non-finite values in {', '.join(bad[:5])}. Nothing was "
                                 "written")
        assert_finite(plain, what)  # replicated: the same on every rank
        tmp = start_checkpoint(self.run_dir, step) if dist.is_main() else checkpoint_tmp(self.run_dir, step)
        dist.barrier()  # the fresh temporary directory exists before any rank writes into it
        sharded_checkpoint.save(shards, tmp / SHARDS_DIR)  # returns once every rank's shard is written
        if dist.is_main():
            commit_checkpoint(self.run_dir, step, tmp, {**plain, "sharded": sorted(sharded)}, keep)

    def latest_checkpoint(self) -> dict | None:
        """The newest checkpoint's state.pt, unchecked (for a stage that inspects before resuming;
        a sharded run's model and optimiser are not in it but in its sharded/ folder)."""
        return load_latest_checkpoint(self.run_dir)

    def should_stop(self) -> bool:
        """Whether a Python callback asked the run to stop (rlhf.runtime.callbacks), agreed over the
        ranks (only rank 0 runs callbacks): the loop then ends after this step."""
        asked = callbacks.stop_requested()
        if dist.launched():
            asked = dist.sum_all([float(asked)])[0] > 0
        return asked

    # ------------------------------------------------------------ the end

    def summary_figures(self) -> dict:
        """The figures every summary.json carries: wall time, peak memory, processes, sharding;
        and, for a stage with frozen models (`prepare_frozen`), `frozen_models`: each one's
        parameter count and the count each rank holds (half of it on each of 2 ranks when sharded,
        all of it when whole). Every rank calls it (the counts are gathered)."""
        figures = {"wall_s": self.elapsed(), "peak_memory_mb": peak_memory_mb(self.device),
                   "processes": self.world_size, "sharding": self.sharding, "precision": self.precision}
        if self._frozen:
            held = dist.gather_objects({name: local for name, (_, local) in self._frozen.items()})
            figures["frozen_models"] = {name: {"parameters": total, "per_rank": [rank[name] for rank in held]}
                                        for name, (total, _) in self._frozen.items()}
        return figures

    def finish(self, model, tokenizer, summary: dict, figures: dict | None = None) -> Path | None:
        """model/ (a Hugging Face directory, atomic, finite weights only; rank 0 writes), then
        summary.json with the stage's `summary` and the common figures, the last file of the run.
        `figures`: name -> matplotlib figure, saved as OUT/NAME.png beside it. Returns the model
        directory (None when `model` is None: a stage whose result is not a model)."""
        model_dir = self._save_model(model, tokenizer) if model is not None else None
        if figures and dist.is_main():
            for name, figure in figures.items():
                figure.savefig(self.path / f"{name}.png", dpi=120, bbox_inches="tight")
        stopped = {"stopped_by_callback": True} if callbacks.stop_requested() else {}
        self.run_dir.write_summary({**summary, **stopped, **self.summary_figures()})
        return model_dir


    def save_model(self, model, tokenizer, directory: Path | None = None) -> Path:
        """`model` as a Hugging Face directory (default: the run's model/), atomic, finite weights
        only, written by rank 0; a sharded model is gathered to rank 0 first. Every rank calls it."""
        return self._save_model(model, tokenizer, directory)

    def _save_model(self, model, tokenizer, directory: Path | None = None) -> Path:
        directory = self.run_dir.model_dir if directory is None else directory
        if not self.is_sharded(model):
            return save_pretrained(model, tokenizer, directory)
        state = sharding.without_tied_copies(model, sharding.full_model_state(model))  # on rank 0; every rank takes part
        bad = dist.broadcast_object(non_finite_entries(state) if dist.is_main() else None)
        if bad:  # every rank stops, not rank 0 alone (the others would wait for it at the barrier)
            raise NonFiniteError(f"refusing to save the model for {directory}: non-finite values in "
                                 f"{', '.join(bad[:5])}. Nothing was written")
        with sharding.unsharded_class(model):
            return save_pretrained(model, tokenizer, directory, state_dict=state)


def enable_activation_checkpointing(model) -> int:
    """transformers' own activation (gradient) checkpointing on `model`, or on the outermost
    transformers models inside it (a PPO critic's body), non-reentrant: the same gradients, and it
    works with frozen inputs (LoRA) and keyword inputs. Returns how many models it was enabled on."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.20's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        return 1
    if hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        return 1
    return sum(enable_activation_checkpointing(child) for child in model.children())


def init(cfg, run_dir: bool | RunDir = True, part_of: RunDir | None = None) -> Runtime:
    """The runtime of a stage's run: the seed set, the device chosen (this rank's under a launcher),
    and the run directory checked, locked and holding config.yaml (`run_dir=False`: a stage
    without one, such as an evaluation that writes a single file). Check the inputs before calling
    it: a refused run leaves no folder behind. A config without a `seed` (an evaluation that
    samples nothing) leaves the random state as it is."""
    t_start = time.perf_counter()
    _check_sharding(cfg)
    if getattr(cfg, "seed", None) is not None:
        seed_everything(cfg.seed)
    dist.set_timeout(getattr(cfg, "dist_timeout", 600.0))  # before the process group starts
    device = pick_device(getattr(cfg, "device", "auto"))
    if run_dir is True:
        run_dir = RunDir(cfg, part_of=part_of)
    elif run_dir is False:
        run_dir = None
    return Runtime(cfg, run_dir, device, t_start)


def _sharding_of(cfg) -> str:
    """`cfg.sharding`, or "fsdp2" under `accelerate launch` with an FSDP version 2 config."""
    return dist.launcher_sharding() or getattr(cfg, "sharding", "none")


def _check_sharding(cfg) -> None:
    """Refuse `--sharding fsdp2` where it is not wired in yet, before the run directory exists."""
    if _sharding_of(cfg) != "fsdp2":
        return
    from ..config import PPOConfig

    if isinstance(cfg, PPOConfig) and cfg.rollout_engine == "vllm":
        raise ValueError("--rollout-engine vllm under --sharding fsdp2 is not supported yet (the engine loads the "
                         "whole policy from each rank): use --rollout-engine rlhf or --sharding none")
    if getattr(cfg, "lora_r", 0) > 0:
        raise ValueError("LoRA under FSDP2 sharding is not supported yet: launch data-parallel (--sharding none)")
