"""FSDP2 (`torch.distributed.fsdp.fully_shard`) behind the runtime object: what `--sharding fsdp2`
does to a model, and how a sharded model and its optimiser turn into the one-file, unsharded
state every checkpoint holds (and back).

As torchtitan does, each decoder layer is sharded as its own unit (its parameters gathered just
before its forward and backward and freed after), then everything else (embeddings, final norm,
head) as the root unit. That unit hangs on the transformer body (`model.model`), not on the whole
model, because rlhf's losses call the body and the head apart (`rlhf.models.lm.target_logits`:
the head only on target positions) and FSDP2 gathers a unit's parameters in the forward of the
module it hangs on. The heads beside the body (`lm_head`, a reward model's `score`) are attached
under the body while `fully_shard` runs, so that the unit manages their parameters too (a head
tied to the embeddings stays tied), then detached: the model's names are unchanged. The root unit
keeps its parameters gathered from its forward to the backward, so a head called after the body
reads them gathered. Every rank keeps 1/world of every parameter, gradient and optimiser state;
the stage never knows.

rlhf divides each rank's loss by the token count of all ranks, so the gradients must be SUMMED
over ranks: FSDP2 averages by default, so every unit is told to divide by 1 and to reduce with a
plain sum (gloo has no PREMUL_SUM, the op FSDP2 picks for a custom factor otherwise).

Checkpoints are sharded: every rank writes its own shard (rlhf.runtime.sharded_checkpoint). The
full states here are for `model/` (gathered on rank 0 with `full_state_dict=True, cpu_offload=True`)
and for resuming a sharded run from an unsharded run's one-file checkpoint: the optimiser's
parameters numbered as `optimizer.state_dict()` numbers them; every rank reads the file and keeps
its own shard.
"""

from __future__ import annotations

import contextlib

import torch

SHARDINGS = ("none", "fsdp2")


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def is_sharded(model) -> bool:
    """Whether `model` itself is a unit of FSDP2 (`holds_shards`: whether any module in it is)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def holds_shards(model: torch.nn.Module) -> bool:
    """Whether any module of `model` is sharded (`shard` puts its units on the decoder layers and
    the body, not on the model): then every forward of it is a collective."""
    return any(is_sharded(module) for module in model.modules())


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks a transformers model names as never to be split (`_no_split_modules`: its decoder
    layers), outermost first, without nesting."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    layers, inside = [], set()
    for module in model.modules():
        if type(module).__name__ in names and id(module) not in inside:
            layers.append(module)
            inside.update(id(m) for m in module.modules())
    return layers


_ATTACHED = "_rlhf_fsdp_head_"  # the name a head has under the body while fully_shard runs


def _shard_root(model: torch.nn.Module, **options) -> None:
    """The root unit on the body of a transformers model, managing the heads beside it too."""
    from torch.distributed.fsdp import fully_shard

    body = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if body is None:
        fully_shard(model, **options)
        return
    heads = [(name, child) for name, child in model.named_children()
             if child is not body and any(True for _ in child.parameters())]
    for name, head in heads:
        body.add_module(_ATTACHED + name, head)
    try:
        fully_shard(body, **options)
    finally:
        for name, _ in heads:
            delattr(body, _ATTACHED + name)


def shard(model: torch.nn.Module, world: int, bf16: bool = False) -> torch.nn.Module:
    """`fully_shard` on every decoder layer of `model`, then on its body, over one mesh of `world`
    CPU processes or GPUs, with gradients summed over the ranks. In place; returns `model`.

    `bf16`: FSDP2's mixed precision (the parameters gathered, and computed with, in bf16; the
    gradients reduced in fp32 into the fp32 shards the optimiser steps), for a device with native
    bf16 (the runtime asks for it only there: rlhf.runtime.device.effective_precision).

    Each unit is told whether it reshards after its forward (a decoder layer does; the root keeps
    its parameters gathered for the head and the backward, as FSDP2 decides for a root by itself),
    so that `gathered` can turn it off for a decode and set it back."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    device_type = next(model.parameters()).device.type
    options = {"mesh": init_device_mesh(device_type, (world,))}
    if bf16:
        from torch.distributed.fsdp import MixedPrecisionPolicy

        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    layers = decoder_layers(model)
    if not layers:
        raise ValueError(f"--sharding fsdp2: {type(model).__name__} names no decoder layers (_no_split_modules)")
    for layer in layers:
        fully_shard(layer, **options)
    _shard_root(model, **options)
    layer_ids = {id(layer) for layer in layers}
    for module in model.modules():
        if isinstance(module, FSDPModule):
            _set_reshard_after_forward(module, id(module) in layer_ids)
            module.set_gradient_divide_factor(1.0)  # summed, not averaged: the loss is already / global count
            module.set_force_sum_reduction_for_comms(True)  # SUM, which gloo (and every backend) reduces
    return model


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters of `model`, the ones this rank holds): equal for a whole model; for a sharded
    one this rank's shards (counted before a forward leaves its root unit gathered)."""
    params = list(model.parameters())
    held = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in params)
    return sum(p.numel() for p in params), held


_RESHARDS = "_rlhf_reshards_after_forward"  # what `shard` chose for a unit, restored after `gathered`


def _set_reshard_after_forward(unit, reshard: bool) -> None:
    unit.set_reshard_after_forward(reshard, recurse=False)
    setattr(unit, _RESHARDS, reshard)


def reshard(model) -> None:
    """Every unit of a sharded `model` back to its shard: a forward without gradients leaves the
    root unit gathered (its backward would free it), and `model.parameters()` then names the
    gathered copies, not the shards an optimiser must be built on."""
    from torch.distributed.fsdp import FSDPModule

    for unit in model.modules():
        if isinstance(unit, FSDPModule):
            unit.reshard()


@contextlib.contextmanager
def gathered(*models):
    """Every sharded unit of `models` all-gathered once, on entry, and kept gathered until the
    exit, where each goes back to its shard: a decode runs its hundreds of forwards (one per new
    token) on whole parameters without a collective among them, where the units alone would
    gather each layer again in every forward. It also lets ranks whose rows stop at different
    lengths run different numbers of forwards. Memory: the whole model on every rank while it
    lasts, as a decode needs it anyway. Models that are not sharded (or None) pass through."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for model in models if model is not None for m in model.modules() if isinstance(m, FSDPModule)]
    if not units:
        yield
        return
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)  # a forward inside leaves its unit gathered
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.set_reshard_after_forward(getattr(unit, _RESHARDS, False), recurse=False)
            unit.reshard()


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` where some parameters are sharded (DTensors, whose norm is
    taken over every rank's shard) and some whole; the norm before clipping, a plain tensor."""
    grads = [p.grad for p in params if p.grad is not None]
    sharded = [g for g in grads if hasattr(g, "full_tensor")]
    if not sharded:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    whole = [g for g in grads if not hasattr(g, "full_tensor")]
    norm = torch.nn.utils.get_total_norm(sharded).full_tensor()
    if whole:
        norm = torch.linalg.vector_norm(torch.stack([norm, torch.nn.utils.get_total_norm(whole).to(norm)]))
    coef = float(torch.clamp(max_norm / (norm + 1e-6), max=1.0))  # as clip_grad_norm_ computes it
    for g in grads:
        g.mul_(coef)
    return norm


# ---------------------------------------------------------------- full (unsharded) states


def full_model_state(model) -> dict:
    """The whole model's state dict on rank 0 (CPU tensors); {} on the other ranks. Collective."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(cpu_offload=True))


def load_full_model_state(model, state: dict) -> None:
    """Every rank holds `state` (an unsharded state dict) and keeps its own shard of it."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, state, options=_options())


def _fqn_order(optimizer, model) -> list[str]:
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def full_optimizer_state(model, optimizer) -> dict:
    """The optimiser's whole state on rank 0 in `optimizer.state_dict()`'s layout (parameters
    numbered in the order of its groups), as an unsharded run saves it; {} on other ranks. Collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    full = get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))
    if not full:
        return {}
    index = {name: i for i, name in enumerate(_fqn_order(optimizer, model))}
    return {"state": {index[name]: value for name, value in full["state"].items()},
            "param_groups": [{**group, "params": [index[name] for name in group["params"]]}
                             for group in full["param_groups"]]}


def load_full_optimizer_state(model, optimizer, state: dict) -> None:
    """Every rank holds `state` (as `full_optimizer_state` gives it, or an unsharded run's
    `optimizer.state_dict()`) and keeps its own shard of it."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    names = _fqn_order(optimizer, model)
    by_name = {"state": {names[i]: value for i, value in state["state"].items()},
               "param_groups": [{**group, "params": [names[i] for i in group["params"]]}
                                for group in state["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, by_name, options=_options())


def without_tied_copies(model, state: dict) -> dict:
    """`state` without the second name of a tied parameter (`lm_head.weight` of a model whose head
    is its embeddings), as transformers' own save leaves it out."""
    first: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        first.setdefault(id(param), name)
    kept = set(first.values())
    named = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return {k: v for k, v in state.items() if k in kept or k not in named}


@contextlib.contextmanager
def unsharded_class(model):
    """`model` seen as its own class (fully_shard makes it an `FSDP<Class>`), so that
    `save_pretrained` records the architecture transformers knows."""
    original = type(model)
    plain = next((c for c in original.__mro__[1:] if c.__name__ == original.__name__.removeprefix("FSDP")), None)
    if plain is None:
        yield model
        return
    model.__class__ = plain
    try:
        yield model
    finally:
        model.__class__ = original
