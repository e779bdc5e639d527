"""`rlhf ppo`: online RL from a reward, with PPO (Schulman et al. 2017, as in InstructGPT,
Ouyang et al. 2022) or the critic-free RLOO, GRPO, REINFORCE and REINFORCE++, and the presets
DAPO, Dr. GRPO and GSPO (the registry: rlhf.config.algorithms; settings: ppo_options).

Each step has two phases:

1. rollout: sample k responses to each of `batch_size` prompts with the current policy (KV
   cache, bf16 where supported); score and shape them, with dynamic sampling keep the groups whose
   rewards differ (ppo_sampling: a reward model or any `module:function`); compute
   the policy's log-probs with the training forward (so the first ratio of the update is 1), the
   reference's log-probs, and, for PPO, the critic's values;
2. update: the algorithm's advantages (ppo_update.ALGORITHMS), then K epochs of minibatch steps
   on the clipped surrogate (plus the KL as a loss term for GRPO, plus the clipped value loss for
   PPO's critic).

Four models take part in PPO: the actor (trained, from --model), the reference (frozen: a copy
of --model, or the actor with its LoRA adapter disabled), the reward (frozen scorer) and the
critic (trained, initialised from the reward model). The checkpoint holds everything a resumed
run needs to continue bit for bit: weights, optimisers, schedulers, the adaptive KL state and
the step (the prompt order and every row's sampling noise are functions of the step).

Under `torchrun` / `accelerate launch` each process samples and trains on its share of every
step's prompts and the statistics and gradients are summed over all (rlhf.train.ppo_dist): the
same seed gives the same run whatever the process count, and rank 0 alone writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable

import torch

from .. import runtime
from ..algos import AdaptiveKLController, FixedKLController, kl_estimate
from ..config import PPOConfig
from ..data.formats import read_prompts
from ..data.tokenize import encode_prompt
from ..data.records import prompt_as_json
from ..eval.policy import evaluate_policy
from ..models import compat
from ..models.load import load_causal_lm, load_policy, save_pretrained
from ..models.reward import disable_dropout
from ..rollout.attention import use_fp32_attention
from ..rollout.generate import SamplingConfig, hashed_row_seeds
from ..rollout.logprobs import response_logprobs
from ..rollout.scorers import ENSEMBLE_STD, load_scorer
from ..runtime import dist
from ..runtime.files import dumps as strict_json
from . import loop
from .critic import build_critic, same_vocabulary
from .guard_overopt import OverOptGuard, save_best
from .ppo_dist import gather_rows, gather_sampled, global_mean, global_rows, global_step_sample, shard_sampled
from .ppo_options import Options, resolve_options
from .ppo_sampling import dynamic_sampling, extra_prompts, sample_and_score
from .ppo_update import ALGORITHMS, Experience, rollout_stats, update, values_of


def _frozen(model):
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_reference(cfg: PPOConfig, device):
    """A frozen copy of the reference, or None when the actor with its LoRA adapter disabled is it."""
    if cfg.reference is None and cfg.lora_r > 0:
        return None
    return _frozen(load_causal_lm(cfg.reference or cfg.model, cfg.trust_remote_code).to(device))


def reference_logprobs(reference, actor, rollout, temperature: float) -> torch.Tensor:
    if reference is not None:
        return response_logprobs(reference, rollout, temperature)
    with actor.disable_adapter():
        return response_logprobs(actor, rollout, temperature)


def critic_init_dir(cfg: PPOConfig, scorer, tokenizer) -> str:
    """--critic, else the reward model when it reads the policy's tokens, else the policy."""
    if cfg.critic:
        return cfg.critic
    if scorer.model_dir is not None:
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


@torch.no_grad()
def collect(actor, reference, critic, scorer, gold, tokenizer, prompts, prompt_ids, cfg, opts, sampling, step: int,
            autocast, answers: list | None = None,
            more_prompts: Callable[[int], tuple[list, list, list]] | None = None) -> tuple[Experience, dict, list[str]]:
    """The rollout phase: sample and score (rlhf.train.ppo_sampling), and compute log pi_old (unless
    the update's single step will), log pi_ref and V on the samples.

    prompts, prompt_ids: this rank's share of the step's global batch (rlhf.train.ppo_dist); each
    row's sampling noise is seeded by (cfg.seed, step, round, its global row).
    answers: each prompt's reference answer (or None) for verifiable rewards. With dynamic sampling,
    `more_prompts(round)` gives this rank's (prompts, prompt_ids, answers) of another round; the
    groups are kept over the whole global round, and `exp.prompts` names the prompts the kept rows answer.
    Returned stats are over the global batch."""
    answers = answers if answers is not None else [None] * len(prompts)

    def sample(prompts, prompt_ids, answers, round_: int):
        seeds = hashed_row_seeds((cfg.seed, step, round_), global_rows(len(prompt_ids) * opts.k, opts.k))
        return sample_and_score(actor, scorer, tokenizer, prompts, prompt_ids, answers, cfg, opts, sampling, seeds,
                                autocast)

    sampled = sample(prompts, prompt_ids, answers, 0)
    sampling_stats = {}
    if opts.dynamic_sampling:  # which groups to keep is decided on the whole global round
        more = None if more_prompts is None else (
            lambda r: gather_sampled(sample(*more_prompts(r), r), opts.k, tokenizer.pad_token_id))
        batch, sampling_stats = dynamic_sampling(gather_sampled(sampled, opts.k, tokenizer.pad_token_id), more,
                                                 len(prompts) * dist.world_size(), opts.k, opts.max_sampling_rounds,
                                                 tokenizer.pad_token_id)
        sampled = shard_sampled(batch, opts.k)
    rollout, raw, score, responses = sampled.rollout, sampled.raw, sampled.score, sampled.responses
    actor.eval()
    old_logp = entropy = None
    with autocast():
        if not single_forward_update(cfg, opts) and (opts.kl_in_reward or not single_update_step(cfg, opts)):
            old_logp, entropy = response_logprobs(actor, rollout, opts.temperature, with_entropy=True)
        ref_logp = reference_logprobs(reference, actor, rollout, opts.temperature)
        values = values_of(critic, rollout) if critic is not None else None
    actor.train()
    stats = {"reward": global_mean(raw), "reward_normalized": global_mean(score),
             **{f"reward/{name}": global_mean(torch.as_tensor(part)) for name, part in sampled.parts.items()},
             **sampling_stats}
    if ENSEMBLE_STD in sampled.parts:  # reward_std: an ensemble reward's disagreement (as rollout.scorers.ensemble_stats)
        stats["reward_std"] = global_mean(torch.as_tensor(sampled.parts[ENSEMBLE_STD]))
    if gold is not None:
        stats["gold"] = global_mean(gold(sampled.prompts, responses, answers=sampled.answers))
    exp = Experience(rollout, old_logp, ref_logp.float(), values, score, entropy, prompts=sampled.prompts)
    return exp, stats, responses


def run(cfg: PPOConfig) -> Path:
    if cfg.model is None or cfg.data is None or cfg.reward is None:
        raise ValueError("ppo needs --model DIR (the SFT policy), --data PROMPTS and --reward (reward-model dir or module:function)")
    t_start = time.perf_counter()
    runtime.seed_everything(cfg.seed)
    device = runtime.pick_device(cfg.device)
    # the over-optimisation guard: its thresholds are checked here, before anything is written
    overopt = OverOptGuard(cfg.guard_window, cfg.guard_patience, cfg.guard_thresholds, cfg.stop_on_overoptimisation)
    run_dir = runtime.RunDir(cfg)
    opts = resolve_options(cfg)
    autocast = lambda: runtime.autocast(cfg.precision, device)  # noqa: E731
    sampling = SamplingConfig(cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p)
    records = read_prompts(cfg.data, skip_bad_rows=cfg.skip_bad_rows)
    prompts = [p.prompt for p in records]
    answers = [p.answer for p in records]  # reference answers of verifiable rewards (None where absent)
    plan = loop.BatchPlan(len(prompts), cfg.batch_size, cfg.seed)
    total_steps = cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(cfg.epochs * plan.per_epoch))

    # The four models: actor, reference, reward (scorer), critic.
    actor, tokenizer = load_policy(cfg, device)
    disable_dropout(actor)  # the ratio of the first minibatch must be exactly 1 (and the reference deterministic)
    compat.check_shared_tokenizer(tokenizer, cfg.reference, "--reference", cfg.trust_remote_code)
    reference = build_reference(cfg, device)
    for model in (actor, reference):  # on CPU, bf16 attention kernels are the slow part of a step
        if model is not None:
            use_fp32_attention(model)
    scorer = load_scorer(cfg.reward, device, cfg.precision, aggregate=cfg.reward_aggregate,
                         uncertainty_coef=cfg.uncertainty_coef)
    gold = load_scorer(cfg.gold, device, cfg.precision) if cfg.gold else None
    critic = None
    if ALGORITHMS[cfg.algo].uses_critic:
        critic = build_critic(critic_init_dir(cfg, scorer, tokenizer), tokenizer, cfg.trust_remote_code,
                              normalize=cfg.normalize_reward).to(device)
    max_prompt_tokens = cfg.max_length - cfg.max_new_tokens

    updates_per_step = opts.epochs * math.ceil(cfg.batch_size * opts.k / opts.minibatch_size)
    actor_opt = loop.make_optimizer(actor, cfg)
    schedulers = [loop.make_scheduler(actor_opt, cfg.warmup_steps, total_steps * updates_per_step, cfg.min_lr_ratio)]
    critic_opt = None
    if critic is not None:
        critic_opt = loop.make_optimizer(critic, dataclasses.replace(cfg, lr=cfg.critic_lr))
        schedulers.append(loop.make_scheduler(critic_opt, cfg.warmup_steps, total_steps * updates_per_step,
                                              cfg.min_lr_ratio))
    kl_ctl = (AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon) if cfg.kl_target
              else FixedKLController(cfg.kl_coef))

    update_guard = runtime.NonFiniteGuard(cfg.max_bad_steps, "optimiser step")  # NaN/inf loss or gradient: skipped
    rollout_guard = runtime.NonFiniteGuard(cfg.max_bad_steps, "rollout")  # NaN/inf reward: no update from it
    start_step, wall_before, tokens_seen = 0, 0.0, 0
    if (state := runtime.resume_state(run_dir)) is not None:  # config checked, logs cut back to its step
        actor.load_state_dict(state["actor"])  # strict: the same actor (and LoRA adapter) that saved it
        actor_opt.load_state_dict(state["actor_opt"])
        if critic is not None:
            critic.load_state_dict(state["critic"])
            critic_opt.load_state_dict(state["critic_opt"])
        for scheduler, s in zip(schedulers, state["schedulers"]):
            scheduler.load_state_dict(s)
        kl_ctl.load_state_dict(state["kl_controller"])
        runtime.set_rng_state(state["rng"])
        update_guard.load_state_dict(state["update_guard"])  # skipped steps count over the whole run
        rollout_guard.load_state_dict(state["rollout_guard"])
        if "overopt_guard" in state:  # checkpoints from before the over-optimisation guard lack it
            overopt.load_state_dict(state["overopt_guard"])
        start_step, wall_before, tokens_seen = state["step"], state["wall_s"], state["tokens"]
    for model in (actor, critic):  # replicas start equal, whatever drew their random parts (a LoRA init)
        if model is not None:
            dist.broadcast_parameters(model)

    def checkpoint(step: int) -> None:
        if not dist.is_main():  # one copy of replicated state; it resumes with any process count
            return
        state = {"actor": actor.state_dict(), "actor_opt": actor_opt.state_dict(),
                 "schedulers": [s.state_dict() for s in schedulers], "kl_controller": kl_ctl.state_dict(),
                 "wall_s": time.perf_counter() - t0, "tokens": tokens_seen,
                 "update_guard": update_guard.state_dict(), "rollout_guard": rollout_guard.state_dict(),
                 "overopt_guard": overopt.state_dict()}
        if critic is not None:
            state.update(critic=critic.state_dict(), critic_opt=critic_opt.state_dict())
        runtime.save_checkpoint(run_dir, step, state, cfg.keep_checkpoints)

    from tqdm.auto import tqdm

    actor.train()
    t0 = time.perf_counter() - wall_before
    last: dict = {}
    bar = tqdm(total=total_steps, initial=start_step, desc=f"{cfg.algo}", disable=not (cfg.progress and dist.is_main()),
               dynamic_ncols=True)
    for step in range(start_step, total_steps):
        runtime.record_step(step)  # steps finished, for the Ctrl-C message
        step_t = time.perf_counter()
        batch_prompts = [prompts[i] for i in plan.micro_batch(step)]
        prompt_ids = [encode_prompt(tokenizer, p)[-max_prompt_tokens:] for p in batch_prompts]

        def more_prompts(round_: int, step: int = step) -> tuple[list, list, list]:  # dynamic sampling's next round
            return tuple(part[dist.rank() :: dist.world_size()]  # this rank's share of the round's prompts
                         for part in extra_prompts(prompts, answers, tokenizer, cfg, step, round_))

        # 1. rollout phase
        exp, reward_stats, responses = collect(actor, reference, critic, scorer, gold, tokenizer, batch_prompts,
                                               prompt_ids, cfg, opts, sampling, step, autocast,
                                               answers=[answers[i] for i in plan.micro_batch(step)],
                                               more_prompts=more_prompts)
        rollout_s = time.perf_counter() - step_t
        kl_coef = kl_ctl.value
        done = step + 1
        score_sum = dist.sum_all([float(exp.score.double().sum())])[0]  # non-finite if any rank's score is
        if not rollout_guard.check(done, reward=reward_stats["reward"], score=score_sum, kl_coef=kl_coef):
            for _ in range(updates_per_step):  # no update, but the schedule stays a function of the step
                runtime.advance_schedulers(schedulers)
            runtime.record_step(done)
            bar.update(1)
            if cfg.save_every and done % cfg.save_every == 0 and done < total_steps:
                checkpoint(done)
            continue
        guard_metrics, best = overopt.observe(done, global_step_sample(responses, exp, reward_stats, opts.k)) \
            if overopt.enabled else ({}, False)
        if best and cfg.guard_save_best:  # the weights that sampled this step's responses
            save_best(actor, tokenizer, run_dir.path)

        # 2. update phase (KL in the reward needs log pi_old first; otherwise it is only measured).
        # Without log pi_old yet, the update's single forward supplies it and then the advantages.
        def advantages_of(exp: Experience, kl_coef: float = kl_coef) -> tuple:
            kl = kl_estimate(exp.old_logp, exp.ref_logp, opts.kl_estimator) if opts.kl_in_reward else None
            return ALGORITHMS[cfg.algo].advantages(exp, kl, kl_coef, opts)

        update_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        deferred = exp.old_logp is None and opts.kl_in_reward
        advantages, returns = (None, None) if deferred else advantages_of(exp)
        stats, advantages, returns = update(actor, critic, exp, advantages_of if deferred else advantages, returns,
                                            kl_coef, actor_opt, critic_opt, schedulers, opts, autocast, update_gen,
                                            guard=update_guard, step=done)
        kl_by_kind = {kind: kl_estimate(exp.old_logp, exp.ref_logp, kind) for kind in ("k1", "k2", "k3")}
        kl = kl_by_kind[opts.kl_estimator]
        sequence_kl = global_mean((kl * exp.mask).sum(1))
        rows = exp.score.shape[0] * dist.world_size()  # the global batch (every rank holds as many rows)
        kl_ctl.update(sequence_kl, n_steps=rows)
        runtime.record_step(done)  # the weights now hold `done` steps

        generated = int(dist.sum_all([float(exp.mask.sum())])[0])
        tokens_seen += generated
        bar.update(1)
        step_end = time.perf_counter()
        evaluation = {}
        if cfg.eval_every and done % cfg.eval_every == 0 and done < total_steps and cfg.eval_data:
            evaluation = _evaluate(cfg, actor, reference, tokenizer, scorer, gold, sampling, device, autocast, run_dir,
                                   write_samples=False)
        if done % cfg.log_every == 0 or done == total_steps or evaluation or overopt.stop_reason:
            now = step_end
            last = {"step": done,
                    "loss": stats["policy_loss"] + stats.get("value_loss", 0.0) + kl_coef * stats.get("kl_loss", 0.0),
                    "lr": schedulers[0].get_last_lr()[0], "tokens_per_s": generated / (now - step_t),
                    "samples_per_s": rows / (now - step_t), "elapsed_s": now - t0, "tokens": tokens_seen,
                    "skipped_steps": update_guard.skipped, "skipped_rollouts": rollout_guard.skipped,
                    "rollout_s": rollout_s, "update_s": now - step_t - rollout_s, **reward_stats,
                    "kl": sequence_kl, "kl_coef": kl_coef, **rollout_stats(exp, kl_by_kind, advantages, returns), **stats,
                    **evaluation, **guard_metrics}
            run_dir.log(last)
            # k3 per sequence: never negative, where `kl` (the reward's estimator, k1 by default) can be
            # on one batch; metrics.jsonl keeps k1, k2 and k3
            bar.set_postfix(reward=f"{last['reward']:.3f}", kl_k3=f"{last['kl_k3']:.2f}")
        if cfg.samples_every and (done % cfg.samples_every == 0 or done == 1):
            _write_samples(run_dir.samples_path, done, gather_rows(list(zip(
                exp.prompts, responses, exp.score.tolist(), exp.rollout.ended.tolist())), opts.k), opts.k)
        if cfg.save_every and done % cfg.save_every == 0 and done < total_steps:
            checkpoint(done)
        if overopt.stop_reason:  # --stop-on-overoptimisation: the guard warned at this step
            break
    bar.close()
    train_wall = time.perf_counter() - t0
    actor.eval()

    final_eval = _evaluate(cfg, actor, reference, tokenizer, scorer, gold, sampling, device, autocast, run_dir) \
        if cfg.eval_data else {}
    model_dir = save_pretrained(actor, tokenizer, run_dir.model_dir)
    run_dir.write_summary({
        "stage": "ppo", "algo": cfg.algo, "samples_per_prompt": opts.k,
        "steps": overopt.stop_reason["step"] if overopt.stop_reason else total_steps,
        "stopped_early": overopt.stop_reason, "guard": overopt.summary(),
        "update_epochs": opts.epochs, "kl_in": "reward" if opts.kl_in_reward else "loss",
        "kl_estimator": opts.kl_estimator, "prompts": len(prompts),
        "skipped_steps": update_guard.skipped, "skipped_rollouts": rollout_guard.skipped,
        **{k: last.get(k) for k in ("reward", "reward_normalized", "gold", "kl", "kl_coef", "entropy",
                                    "response_length", "eos_rate") if k in last},
        **final_eval,
        "generated_tokens": tokens_seen, "tokens_per_s": tokens_seen / max(train_wall, 1e-9),
        "train_wall_s": train_wall, "wall_s": time.perf_counter() - t_start,
        "peak_memory_mb": runtime.peak_memory_mb(device),
    })
    return model_dir


def _evaluate(cfg, actor, reference, tokenizer, scorer, gold, sampling, device, autocast, run_dir,
              write_samples: bool = True) -> dict:
    """Win rate against the reference on held-out prompts (judge: gold if given, else the reward) and KL."""
    prompts = [p.prompt for p in read_prompts(cfg.eval_data)][: cfg.num_eval_prompts]
    ref = reference
    if ref is None:
        ref = _frozen(load_causal_lm(cfg.model).to(device))
        use_fp32_attention(ref)
    judge = gold or scorer
    report = evaluate_policy(actor, ref, tokenizer, prompts, judge, sampling, seed=cfg.seed + 1,
                             autocast=autocast, max_prompt_tokens=cfg.max_length - cfg.max_new_tokens)
    samples = report.pop("samples")
    if write_samples and dist.is_main():  # every rank evaluates alike (same weights, same seed); one writes
        with open(run_dir.path / "eval_samples.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(s) + "\n" for s in samples)
    report["judge"] = judge.name
    return {f"eval_{k}": v for k, v in report.items()}


def _write_samples(path: Path, step: int, rows: list[tuple], k: int, n: int = 4) -> None:
    """The first response to each of the batch's first `n` prompts; rows: (prompt, response,
    score, ended) of every row of the global batch, k per prompt. Rank 0 writes."""
    if not dist.is_main():
        return
    with open(path, "a", encoding="utf-8") as f:
        for prompt, response, score, ended in rows[: n * k : k]:
            f.write(strict_json({"step": step, "prompt": prompt_as_json(prompt), "response": response,
                                "score": float(score), "ended": bool(ended)}) + "\n")
