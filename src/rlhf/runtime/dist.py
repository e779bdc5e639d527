"""Ranks and collectives: the one place that knows whether a run has one process or several.

A launcher (`torchrun`, `accelerate launch`) sets WORLD_SIZE; then the process group and the
device come from `accelerate.PartialState` (gloo on CPU, nccl on GPUs). Without a launcher
nothing is imported or initialised and every function answers for a single process at no cost:
rank 0 of 1, collectives return their input, the barrier returns at once.

As in nanochat (`compute_init`, `print0`) and nanoGPT (`master_process`, `seed_offset`), every
rank holds the whole model; rank 0 alone writes the run directory. As in OpenRLHF's
`aggregate_loss`, a loss summed over tokens (or examples) is divided by the count of all ranks,
so the loss and its gradient are the same whatever the number of processes.
"""

from __future__ import annotations

import os

import torch

_STATE = None  # accelerate.PartialState once a multi-process run has asked for it
_TIMEOUT_S = 600.0  # how long a collective waits for the other ranks (`--dist-timeout`)
# What `accelerate launch` sets under a sharding config: not wired into rlhf's loop yet (FSDP
# version 2 is: rlhf's own `--sharding fsdp2`, see `launcher_sharding`).
SHARDED_ENGINES = {"FSDP": "ACCELERATE_USE_FSDP", "DeepSpeed": "ACCELERATE_USE_DEEPSPEED"}


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true")


def launcher_sharding() -> str | None:
    """"fsdp2" when `accelerate launch` started this process under an FSDP version 2 config
    (configs/accelerate/fsdp2*.yaml): rlhf then shards as with `--sharding fsdp2` (its own
    `fully_shard`; the config's other FSDP options are not read). None otherwise."""
    if launched() and _env_true("ACCELERATE_USE_FSDP") and os.environ.get("FSDP_VERSION") == "2":
        return "fsdp2"
    return None


def launched() -> bool:
    """Whether a launcher started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def state():
    """accelerate's PartialState (initialising the process group on first use), or None alone."""
    global _STATE
    if _STATE is None and launched():
        from accelerate import PartialState

        sharded = [name for name, var in SHARDED_ENGINES.items() if _env_true(var)]
        if sharded and launcher_sharding() is None:
            raise ValueError(f"launched under accelerate's {sharded[0]} config, but rlhf's loop is data-parallel only so "
                             "far (every rank holds the whole model) except under FSDP version 2: launch with "
                             "configs/accelerate/multi-gpu-ddp.yaml (or torchrun) instead of running unsharded under a "
                             "sharding config, or shard with configs/accelerate/fsdp2.yaml (or --sharding fsdp2)")

        # Under plain torchrun accelerate only goes distributed on CPU when told `cpu=True`;
        # `accelerate launch --cpu` says so through ACCELERATE_USE_CPU.
        use_cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
        from datetime import timedelta

        _STATE = PartialState(cpu=use_cpu, timeout=timedelta(seconds=_TIMEOUT_S))
    return _STATE


def set_timeout(seconds: float) -> None:
    """How long a collective waits for the other ranks before the run fails (a rank that died
    without its launcher noticing); set before the process group starts (`runtime.init` does)."""
    global _TIMEOUT_S
    _TIMEOUT_S = float(seconds)


def rank() -> int:
    return state().process_index if launched() else 0


def world_size() -> int:
    return state().num_processes if launched() else 1


def is_main() -> bool:
    """Rank 0: the process that writes the run directory, logs and prints."""
    return rank() == 0


def device(name: str) -> torch.device:
    """The device of this rank: `name` alone; under a launcher "auto" and "cuda" mean this rank's GPU."""
    if launched() and name in ("auto", "cuda"):
        return state().device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def print0(*args, **kwargs) -> None:
    if is_main():
        print(*args, **kwargs)


def rank_seed(seed: int) -> int:
    """The seed of this rank's sampling (nanoGPT's seed_offset): ranks that sample must not draw
    the same numbers. Training itself seeds every rank alike, so the replicas start equal."""
    return seed + rank()


def barrier() -> None:
    if launched():
        state().wait_for_everyone()


def require_single_process(what: str) -> None:
    """Refuse to run `what` under a launcher: it is not data-parallel yet, and N copies of it
    would train N different models or race on one run directory."""
    if launched():
        raise ValueError(f"{what} runs in one process only so far (started as one of {os.environ['WORLD_SIZE']}): "
                         "launch it without torchrun / accelerate launch")


# ---------------------------------------------------------------- collectives


def sum_all(values: list[float]) -> list[float]:
    """Each value summed over the ranks, in one all-reduce (float64, so counts stay exact)."""
    if not launched():
        return list(values)
    flat = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    torch.distributed.all_reduce(flat)
    return flat.tolist()


def mean_all(stats: dict[str, float]) -> dict[str, float]:
    """Each figure averaged over the ranks that report it (a rank whose batch had no pair has no
    `margin`), so ranks may differ in their keys. For logging: it gathers Python objects."""
    if not launched():
        return dict(stats)
    gathered: list[dict] = [{} for _ in range(world_size())]
    torch.distributed.all_gather_object(gathered, {k: float(v) for k, v in stats.items()})
    keys = sorted({k for one in gathered for k in one})
    return {k: sum(one[k] for one in gathered if k in one) / sum(k in one for one in gathered) for k in keys}


def sum_stats(stats: dict[str, float]) -> dict[str, float]:
    """Each figure summed over the ranks that report it (a rank whose share of a minibatch was
    empty reports nothing). For figures each rank has already weighted by its share of the whole."""
    if not launched():
        return dict(stats)
    gathered: list[dict] = [{} for _ in range(world_size())]
    torch.distributed.all_gather_object(gathered, {k: float(v) for k, v in stats.items()})
    keys = sorted({k for one in gathered for k in one})
    return {k: sum(one[k] for one in gathered if k in one) for k in keys}


def sum_tensor(t: torch.Tensor) -> torch.Tensor:
    """`t` summed over the ranks (in float64, returned in t's dtype); `t` itself alone."""
    if not launched():
        return t
    total = t.detach().to(_collective_device(), torch.float64).clone()
    torch.distributed.all_reduce(total)
    return total.to(t.device, t.dtype)


def gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order (picklable Python objects); [obj] alone."""
    if not launched():
        return [obj]
    gathered: list = [None] * world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj):
    """Rank 0's `obj` (a picklable Python object) on every rank; `obj` itself alone."""
    if not launched():
        return obj
    box = [obj if is_main() else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def global_count(local_count: int) -> int:
    """The tokens (or examples) of all ranks: what a per-token loss is divided by."""
    return int(round(sum_all([float(local_count)])[0]))


def aggregate(loss_sum: torch.Tensor, local_count: int) -> torch.Tensor:
    """`loss_sum` (summed over this rank's units) divided by the units of all ranks: with the
    gradients then summed over ranks (`sum_gradients`), the update is the single-process one."""
    return loss_sum / max(global_count(local_count), 1)


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum the gradients of `params` over the ranks, in place, in one all-reduce. Each rank's
    gradient is d(its loss sum / the global count), so the sum is the gradient of the global batch.
    A parameter without a gradient on this rank (its share of the batch was empty) gets zeros when
    another rank has one, and stays without one when no rank has: the optimiser then treats it as
    one process would."""
    if not launched():
        return
    has_grad = torch.tensor([float(p.grad is not None) for p in params], device=_collective_device())
    torch.distributed.all_reduce(has_grad, op=torch.distributed.ReduceOp.MAX)
    for p, anywhere in zip(params, has_grad.tolist()):
        if p.grad is None and anywhere:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


@torch.no_grad()
def broadcast_parameters(model: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank: the replicas start equal whatever drew them."""
    if not launched():
        return
    for tensor in list(model.parameters()) + list(model.buffers()):
        torch.distributed.broadcast(tensor.data, src=0)


def shutdown() -> None:
    """Tear down the process group at the end of a multi-process run (no-op alone), once every
    rank has got there: rank 0 finishes later (it writes model/ and summary.json), and a rank
    that destroys its gloo pairs while another still holds them can abort the process (a rank of
    a resumed 2-process FSDP2 run once ended with "terminate called without an active exception";
    whether at this point is not known; a barrier first is the usual guard)."""
    if _STATE is not None:
        torch.distributed.barrier()
        _STATE.destroy_process_group()


def _collective_device() -> torch.device:
    # nccl reduces CUDA tensors only; gloo CPU ones.
    return state().device if state().device.type == "cuda" else torch.device("cpu")
