"""`rlhf ppo --async-staleness K`: the built-in sampler moved into a worker process that samples
up to K steps ahead of the learner (rlhf.rollout.async_sampler has the semantics).

The learner's update stays the one of the synchronous loop, which makes it decoupled PPO
(Hilton et al. 2022): the ratio's pi_old is the learner's current weights (its own forward on the
samples, or the single-step update's forward), the behaviour policy (the worker's older copy)
enters only through the truncated importance weight min(pi_old / pi_behaviour, C) of
`--tis-cap` (rlhf.algos.importance), applied with the sampler's log-probs in every update path.
"""

from __future__ import annotations

import functools
from typing import Callable

from ..config import PPOConfig
from ..models.load import load_policy
from ..models.reward import disable_dropout
from ..rollout.async_sampler import AsyncSampler
from ..rollout.attention import use_fp32_attention
from ..rollout.sampler import Sampler
from ..runtime import dist
from ..runtime.files import notice
from . import loop


def check_async(cfg: PPOConfig, sampler: Sampler | None) -> None:
    """Refuse what --async-staleness does not cover, before the run directory exists."""
    if cfg.async_staleness == 0:
        return
    if dist.launched():
        raise ValueError("--async-staleness runs one sampler process beside one learner: launch rlhf ppo without "
                         "torchrun / accelerate launch, or drop --async-staleness")
    if cfg.rollout_engine != "rlhf":
        raise ValueError(f"--async-staleness samples with rlhf's own sampler in a worker process; --rollout-engine "
                         f"{cfg.rollout_engine} is synchronous: drop one of them")
    if sampler is not None:
        raise ValueError("--async-staleness builds the built-in sampler in its worker process; a sampler passed to "
                         "ppo.run samples in this one: drop one of them")
    if cfg.tis_cap == 0:  # allowed, as an ablation and as some one-step-off-policy trainers run: said, not hidden
        notice("rlhf ppo: --async-staleness with --tis-cap 0 trains on samples of older weights as if they were the "
             "current policy's (no importance correction); --tis-cap 2 is decoupled PPO's truncated weight")


def async_sampler(cfg: PPOConfig, local: Sampler, build_sampler: Callable, prompts: list, plan: loop.BatchPlan,
                  steps: int, device) -> AsyncSampler:
    """`local` (the built-in sampler of this process, whose scorer the evaluation uses) with its
    twin, made by `build_sampler` (rlhf.train.ppo's), in a worker process sampling
    `cfg.async_staleness` steps ahead along `plan`."""
    build = functools.partial(sampler_worker, build_sampler, cfg, prompts, str(device))
    return AsyncSampler(local, build, cfg.async_staleness,
                        functools.partial(step_prompts, prompts, plan), steps, timeout_s=cfg.dist_timeout)


def step_prompts(prompts: list, plan: loop.BatchPlan, step: int) -> list:
    """The prompts of `step`, as the training loop takes them."""
    return [prompts[i] for i in plan.micro_batch(step)]


def sampler_worker(build_sampler: Callable, cfg: PPOConfig, prompts: list, device: str) -> tuple:
    """(policy, sampler) of the worker process: a copy of the policy as `build_policy` makes it
    (its weights replaced by the learner's before each job) and `build_sampler`'s sampler."""
    import torch

    from .ppo_options import resolve_options

    torch.manual_seed(cfg.seed)
    policy, tokenizer = load_policy(cfg, torch.device(device))
    disable_dropout(policy)
    use_fp32_attention(policy)
    return policy, build_sampler(cfg, resolve_options(cfg), tokenizer, prompts, torch.device(device))
