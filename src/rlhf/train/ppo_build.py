"""What `rlhf ppo` trains, built from its config: the actor, the reference, the critic, their
optimisers and schedules, the KL controller and the guards, held in one `Learner` whose
`holders()` are what a checkpoint saves and a resumed run loads back.

Four models take part in PPO: the actor (trained, from --model), the reference (frozen: a copy
of --model, or the actor with its LoRA adapter disabled), the reward (frozen scorer, the
sampler's; its reward models sharded like the reference) and the critic (trained, initialised
from the reward model where it reads the policy's tokens). The critic-free algorithms have no critic.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .. import runtime
from ..algos import AdaptiveKLController, FixedKLController
from ..config import PPOConfig
from ..models import compat
from ..models.load import load_causal_lm, load_policy
from ..models.reward import disable_dropout
from ..rollout.attention import use_fp32_attention
from ..rollout.logprobs import response_logprobs
from ..runtime.sharding import holds_shards, reshard
from . import loop
from .critic import build_critic, same_vocabulary
from .guard_overopt import OverOptGuard
from .ppo_options import Options
from .ppo_update import ALGORITHMS


@dataclasses.dataclass
class Learner:
    """The trained models and every piece of state the update changes."""

    actor: torch.nn.Module
    tokenizer: object
    reference: torch.nn.Module | None  # frozen; None: the actor with its LoRA adapter disabled
    critic: torch.nn.Module | None  # None for the critic-free algorithms
    actor_opt: torch.optim.Optimizer
    critic_opt: torch.optim.Optimizer | None
    schedulers: list  # the actor's, then the critic's
    kl_ctl: AdaptiveKLController | FixedKLController
    update_guard: runtime.NonFiniteGuard  # NaN/inf loss or gradient: that optimiser step skipped
    rollout_guard: runtime.NonFiniteGuard  # NaN/inf reward: no update from that rollout
    overopt: OverOptGuard | None  # the over-optimisation guard (None in a one-step check: rlhf doctor)
    updates_per_step: int  # optimiser steps per rollout (the schedule counts them)

    def holders(self) -> dict:
        """The state a checkpoint holds, by the names checkpoints have always given it (a None is left out)."""
        return {"actor": self.actor, "actor_opt": self.actor_opt, "critic": self.critic, "critic_opt": self.critic_opt,
                "schedulers": self.schedulers, "kl_controller": self.kl_ctl, "update_guard": self.update_guard,
                "rollout_guard": self.rollout_guard, "overopt_guard": self.overopt}


def build_policy(cfg: PPOConfig, device) -> tuple:
    """(actor, tokenizer, reference): the actor without dropout (the first ratio of an update must
    be exactly 1, the reference deterministic), both with fp32 attention (on CPU, bf16 attention
    kernels are the slow part of a step)."""
    actor, tokenizer = load_policy(cfg, device)
    disable_dropout(actor)
    compat.check_shared_tokenizer(tokenizer, cfg.reference, "--reference", cfg.trust_remote_code)
    reference = build_reference(cfg, device)
    for model in (actor, reference):
        if model is not None:
            use_fp32_attention(model)
    return actor, tokenizer, reference


def build_learner(cfg: PPOConfig, opts: Options, actor, tokenizer, reference, scorer, total_steps: int,
                  overopt: OverOptGuard | None, rt=None) -> Learner:
    """The critic (for PPO: from `critic_init_dir`), AdamW for each trained model with warm-up and
    cosine decay over every optimiser step of the run, the KL controller and the guards. With a
    runtime `rt`, the models are prepared by it (replicas equal, sharded where it shards) before
    the optimisers are built on their parameters, and the frozen ones (the reference, the
    scorer's reward models) sharded for inference where it shards them."""
    device = next(actor.parameters()).device
    critic = critic_opt = None
    if ALGORITHMS[cfg.algo].uses_critic:
        critic = build_critic(critic_init_dir(cfg, scorer, tokenizer), tokenizer, cfg.trust_remote_code,
                              normalize=cfg.normalize_reward).to(device)
    if rt is not None:  # sharding replaces the parameters: before any optimiser holds them
        rt.prepare(actor, critic)
        rt.prepare_frozen(reference=reference, **(scorer.named_models("reward") if scorer is not None else {}))
    updates_per_step = opts.epochs * math.ceil(cfg.batch_size * opts.k / opts.minibatch_size)
    schedule = lambda opt: loop.make_scheduler(opt, cfg.warmup_steps, total_steps * updates_per_step,  # noqa: E731
                                               cfg.min_lr_ratio)
    actor_opt = loop.make_optimizer(actor, cfg)
    schedulers = [schedule(actor_opt)]
    if critic is not None:
        critic_opt = loop.make_optimizer(critic, dataclasses.replace(cfg, lr=cfg.critic_lr))
        schedulers.append(schedule(critic_opt))
    kl_ctl = (AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon) if cfg.kl_target
              else FixedKLController(cfg.kl_coef))
    return Learner(actor, tokenizer, reference, critic, actor_opt, critic_opt, schedulers, kl_ctl,
                   runtime.NonFiniteGuard(cfg.max_bad_steps, "optimiser step"),
                   runtime.NonFiniteGuard(cfg.max_bad_steps, "rollout"), overopt, updates_per_step)


def frozen(model):
    """`model` in eval mode with no parameter trained."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_reference(cfg: PPOConfig, device):
    """A frozen copy of the reference, or None when the actor with its LoRA adapter disabled is it."""
    if cfg.reference is None and cfg.lora_r > 0:
        return None
    return frozen(load_causal_lm(cfg.reference or cfg.model, cfg.trust_remote_code).to(device))


def reference_logprobs(reference, actor, rollout, temperature: float) -> torch.Tensor:
    """log pi_ref (B, T) of the rollout's response tokens. A sharded reference (FSDP2) goes back to
    its shards after the forward: a frozen model has no backward to free its root unit
    (embeddings, final norm, head), which would otherwise stay whole on every rank between steps."""
    if reference is not None:
        logp = response_logprobs(reference, rollout, temperature)
        if holds_shards(reference):
            reshard(reference)
        return logp
    with actor.disable_adapter():
        return response_logprobs(actor, rollout, temperature)


def critic_init_dir(cfg: PPOConfig, scorer, tokenizer) -> str:
    """--critic, else the reward model when it reads the policy's tokens, else the policy."""
    if cfg.critic:
        return cfg.critic
    if scorer is not None and scorer.model_dir is not None:
        from transformers import AutoConfig

        from ..models.load import load_tokenizer
        from ..models.reward import infer_input_format

        causal = infer_input_format(AutoConfig.from_pretrained(scorer.model_dir, local_files_only=True)) == "causal"
        if causal and same_vocabulary(load_tokenizer(scorer.model_dir), tokenizer):
            return str(scorer.model_dir)
    return cfg.model


def single_update_step(cfg: PPOConfig, opts: Options) -> bool:
    """True when each rollout gets exactly one optimiser step: the update's own forward is then
    pi_old, and the rollout phase can skip it unless the KL is in the reward (needed before)."""
    return opts.epochs == 1 and opts.minibatch_size >= cfg.batch_size * opts.k


def single_forward_update(cfg: PPOConfig, opts: Options) -> bool:
    """True when the update is one optimiser step over one micro-batch holding the whole rollout:
    its forward is pi_old for every row at once, so even a KL in the reward (RLOO, REINFORCE) can
    be computed from it, and the advantages after it, with no separate pi_old forward."""
    return single_update_step(cfg, opts) and opts.grad_accum == 1
