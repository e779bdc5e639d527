"""`rlhf ppo`: online RL from a reward, with PPO (Schulman et al. 2017, as in InstructGPT,
Ouyang et al. 2022) or the critic-free RLOO, GRPO, REINFORCE and REINFORCE++, and the presets
DAPO, Dr. GRPO and GSPO (the registry: rlhf.config.algorithms; settings: ppo_options).

Each step has two phases:

1. rollout: a sampler (rlhf.rollout.sampler; by default the KV-cache sampler scored by --reward,
   with DAPO's dynamic sampling where asked) returns k scored responses to each of
   `batch_size` prompts; the trainer adds the policy's log-probs from the training forward (so
   the first ratio of the update is 1), the reference's log-probs, and, for PPO, the critic's values;
2. update: the algorithm's advantages (ppo_update.ALGORITHMS), then K epochs of minibatch steps
   on the clipped surrogate (plus the KL as a loss term for GRPO, plus the clipped value loss for
   PPO's critic).

The models and the state they carry are built by rlhf.train.ppo_build. The checkpoint holds
everything a resumed run needs to continue bit for bit: weights, optimisers, schedulers, the
adaptive KL state, the guards, the sampler's state and the step (the prompt order and every
row's sampling noise are functions of the step).

With --async-staleness K the sampler runs in a worker process K steps ahead of the update
(rlhf.train.ppo_async): the loop is the same, its samples come from weights up to K updates old.

Under `torchrun` / `accelerate launch` each process samples and trains on its share of every
step's prompts and the statistics and gradients are summed over all (rlhf.train.ppo_dist): the
same seed gives the same run whatever the process count, and rank 0 alone writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import runtime
from ..algos import kl_estimate
from ..config import PPOConfig
from ..data.batches import check_batch
from ..data.formats import read_prompts
from ..data.records import prompt_as_json
from ..eval.policy import evaluate_policy
from ..models.load import load_causal_lm
from ..rollout.attention import use_fp32_attention
from ..rollout.experience import Experience, Sampled
from ..rollout.generate import SamplingConfig
from ..rollout.kv_sampler import KVCacheSampler, rollout_precision
from ..rollout.logprobs import response_logprobs
from ..rollout.sampler import Sampler
from ..rollout.scorers import load_scorer
from ..runtime import dist
from ..runtime.files import dumps as strict_json
from . import loop
from .guard_overopt import OverOptGuard, save_best
from .ppo_build import (  # noqa: F401  (build_reference, critic_init_dir: callers read them from here)
    Learner,
    build_learner,
    build_policy,
    build_reference,
    critic_init_dir,
    frozen,
    reference_logprobs,
    single_forward_update,
    single_update_step,
)
from .ppo_async import async_sampler, check_async
from .ppo_dist import gather_rows, global_mean, global_step_sample
from .ppo_options import Options, resolve_options
from .ppo_update import ALGORITHMS, rollout_stats, update, values_of


def run(cfg: PPOConfig, sampler: Sampler | None = None) -> Path:
    """Train cfg.model on cfg.data's prompts; `sampler` samples and rewards (default: the KV-cache
    sampler scored by cfg.reward). Writes the run directory; returns its model/."""
    with contextlib.ExitStack() as workers:  # an --async-staleness worker process ends with the run, however it ends
        return train(cfg, sampler, workers)


def train(cfg: PPOConfig, sampler: Sampler | None, workers: contextlib.ExitStack) -> Path:
    """`run`'s loop; `workers` closes what it starts."""
    check_inputs(cfg, sampler)
    overopt = OverOptGuard(cfg.guard_window, cfg.guard_patience, cfg.guard_thresholds, cfg.stop_on_overoptimisation)
    prompts = read_prompts(cfg.data, skip_bad_rows=cfg.skip_bad_rows)  # with their reference answers, if any
    check_batch(len(prompts), cfg.batch_size, dist.world_size(), "prompts", Path(cfg.data).name)
    rt = runtime.init(cfg)  # seed, device, the run directory (after every check above: a refusal writes nothing)
    opts = resolve_options(cfg)
    plan = loop.BatchPlan(len(prompts), cfg.batch_size, cfg.seed)
    total_steps = cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(cfg.epochs * plan.per_epoch))
    actor, tokenizer, reference = build_policy(cfg, rt.device)
    sampler = sampler or build_sampler(cfg, opts, tokenizer, prompts, rt.device)
    if cfg.async_staleness:  # the same sampler, in a worker process running ahead (rlhf.train.ppo_async)
        sampler = workers.enter_context(async_sampler(cfg, sampler, build_sampler, prompts, plan, total_steps,
                                                      rt.device))
    gold = load_scorer(cfg.gold, rt.device, cfg.precision) if cfg.gold else None  # measured, never optimised
    learner = build_learner(cfg, opts, actor, tokenizer, reference, sampler.scorer, total_steps, overopt, rt)
    if gold is not None:  # every rank scores its own rows with it, in lockstep when sharded
        rt.prepare_frozen(**gold.named_models("gold"))
    resumed = rt.resume(**learner.holders(), sampler=sampler)  # config checked, logs cut back to its step
    start = resumed.step if resumed else 0
    tokens = resumed.get("tokens", 0) if resumed else 0
    t0 = time.perf_counter() - (resumed.get("wall_s", 0.0) if resumed else 0.0)
    bar = progress_bar(cfg, total_steps, start)
    last: dict = {}
    learner.actor.train()
    for step in range(start, total_steps):
        runtime.record_step(step)  # steps finished, for the Ctrl-C message
        done = step + 1
        result = ppo_step(rt, cfg, opts, learner, sampler, gold, [prompts[i] for i in plan.micro_batch(step)], step)
        runtime.record_step(done)  # the weights now hold `done` steps
        bar.update(1)
        if result is not None:  # None: a non-finite reward, no update
            tokens += result.tokens
            evaluation = {}
            if cfg.eval_every and done % cfg.eval_every == 0 and done < total_steps and cfg.eval_data:
                evaluation = evaluate(cfg, learner, gold or sampler.scorer, rt, write_samples=False)
            if done % cfg.log_every == 0 or done == total_steps or evaluation or learner.overopt.stop_reason:
                last = log_step(rt, bar, learner, result, done, tokens, t0, evaluation)
            if cfg.samples_every and (done % cfg.samples_every == 0 or done == 1):
                write_samples(rt.run_dir.samples_path, done, result.sampled, opts.k)
        if cfg.save_every and done % cfg.save_every == 0 and done < total_steps:
            rt.checkpoint(done, **learner.holders(), sampler=sampler, tokens=tokens, wall_s=time.perf_counter() - t0)
        if learner.overopt.stop_reason:  # --stop-on-overoptimisation: the guard warned at this step
            break
        if rt.should_stop():  # a Python callback asked (rlhf.runtime.callbacks): end as a finished run does
            total_steps = done
            break
    bar.close()
    return finish(rt, cfg, opts, learner, sampler, gold, last, tokens, time.perf_counter() - t0, total_steps,
                  len(prompts))


def check_inputs(cfg: PPOConfig, sampler: Sampler | None) -> None:
    """Refuse a run that cannot start, before anything is written."""
    if cfg.model is None or cfg.data is None or (cfg.reward is None and sampler is None):
        raise ValueError("ppo needs --model DIR (the SFT policy), --data PROMPTS and --reward (reward-model dir or module:function)")
    k = resolve_options(cfg).k
    if sampler is not None and sampler.k != k:
        raise ValueError(f"the sampler gives {sampler.k} samples per prompt, --algo {cfg.algo} trains on {k}: "
                         f"build it with k={k}")
    if sampler is not None and cfg.eval_data and sampler.scorer is None and not cfg.gold:
        raise ValueError("--eval-data needs a judge: --gold, or a sampler that scores with a reward")
    check_async(cfg, sampler)
    if cfg.rollout_engine == "vllm" and sampler is None:
        from ..rollout.vllm_sampler import import_vllm

        import_vllm()  # not installed: a one-line error with the install line, before the run directory exists


def build_sampler(cfg: PPOConfig, opts: Options, tokenizer, prompts: list, device) -> KVCacheSampler:
    """The built-in sampler: the KV cache (or, with --rollout-engine vllm, an in-process vLLM
    engine), scored by --reward (a reward model on `device`, an ensemble, or a `module:function`),
    with dynamic sampling over `prompts` where asked."""
    scorer = load_scorer(cfg.reward, device, cfg.precision, aggregate=cfg.reward_aggregate,
                         uncertainty_coef=cfg.uncertainty_coef)
    if cfg.rollout_engine == "vllm":  # imported here only: vllm is a separate install (docs/vllm.md)
        from ..rollout.vllm_sampler import VLLMSampler

        return VLLMSampler(tokenizer, scorer, cfg, opts.k, prompts, opts.dynamic_sampling, opts.max_sampling_rounds)
    return KVCacheSampler(tokenizer, scorer, cfg, opts.k, prompts, opts.dynamic_sampling, opts.max_sampling_rounds)


@dataclass
class StepResult:
    sampled: Sampled  # this rank's samples of the step, as trained on
    figures: dict  # the step's metrics: reward, KL, the update's statistics, timings
    tokens: int  # response tokens sampled over every rank


def ppo_step(rt, cfg: PPOConfig, opts: Options, learner: Learner, sampler: Sampler, gold, prompts: list,
             step: int) -> StepResult | None:
    """One step: the rollout phase (the sampler, then the trainer's forwards), then the update.
    None when the rollout's reward is not finite: no update, the schedule still moves on."""
    t = time.perf_counter()
    with rt.gathered(learner.actor):  # a sharded policy gathered once for the whole decode
        sampled = sampler.sample(learner.actor, prompts, step)
    exp = experience_of(sampled, learner, cfg, opts, rt.autocast)
    rewards = {**reward_stats(sampled, gold), **sampled.stats}
    rollout_s, kl_coef, done = time.perf_counter() - t, learner.kl_ctl.value, step + 1
    score_sum = dist.sum_all([float(exp.score.double().sum())])[0]  # non-finite if any rank's score is
    if not learner.rollout_guard.check(done, reward=rewards["reward"], score=score_sum, kl_coef=kl_coef):
        for _ in range(learner.updates_per_step):  # the schedule stays a function of the step
            runtime.advance_schedulers(learner.schedulers)
        return None
    guard_metrics, best = {}, False
    if learner.overopt.enabled:
        guard_metrics, best = learner.overopt.observe(done, global_step_sample(sampled.responses, exp, rewards, opts.k))
    if best and cfg.guard_save_best:  # the weights that sampled this step's responses
        save_best(learner.actor, learner.tokenizer, rt.path, save=rt.save_model)
    stats, advantages, returns = update_phase(learner, exp, cfg, opts, kl_coef, step, rt.autocast, rt)
    kl_by_kind = {kind: kl_estimate(exp.old_logp, exp.ref_logp, kind) for kind in ("k1", "k2", "k3")}
    sequence_kl = global_mean((kl_by_kind[opts.kl_estimator] * exp.mask).sum(1))
    rows = exp.score.shape[0] * dist.world_size()  # the global batch (every rank holds as many rows)
    learner.kl_ctl.update(sequence_kl, n_steps=rows)
    generated = int(dist.sum_all([float(exp.mask.sum())])[0])
    seconds = time.perf_counter() - t
    return StepResult(sampled, {
        "loss": stats["policy_loss"] + stats.get("value_loss", 0.0) + kl_coef * stats.get("kl_loss", 0.0),
        "tokens_per_s": generated / seconds, "samples_per_s": rows / seconds, "rollout_s": rollout_s,
        "update_s": seconds - rollout_s, **rewards, "kl": sequence_kl, "kl_coef": kl_coef,
        **rollout_stats(exp, kl_by_kind, advantages, returns, opts.tis_cap), **stats,
        **guard_metrics}, generated)


@torch.no_grad()
def experience_of(sampled: Sampled, learner: Learner, cfg: PPOConfig, opts: Options, autocast) -> Experience:
    """The trainer's forwards on the samples: log pi_old and its entropy (unless the update's single
    step computes them), log pi_ref and, with a critic, V."""
    actor, rollout = learner.actor, sampled.rollout
    actor.eval()
    old_logp = entropy = None
    with autocast():
        if not single_forward_update(cfg, opts) and (opts.kl_in_reward or not single_update_step(cfg, opts)):
            old_logp, entropy = response_logprobs(actor, rollout, opts.temperature, with_entropy=True)
        ref_logp = reference_logprobs(learner.reference, actor, rollout, opts.temperature)
        values = values_of(learner.critic, rollout) if learner.critic is not None else None
    actor.train()
    return Experience(rollout, old_logp, ref_logp.float(), values, sampled.score, entropy, prompts=sampled.prompts)


def reward_stats(sampled: Sampled, gold) -> dict:
    """The step's reward over every rank: the raw and the shaped means, each named part's, and the
    gold reward's where there is one."""
    stats = {"reward": global_mean(sampled.raw), "reward_normalized": global_mean(sampled.score),
             **{f"reward/{name}": global_mean(torch.as_tensor(part)) for name, part in sampled.parts.items()}}
    if gold is not None:
        stats["gold"] = global_mean(gold(sampled.prompts, sampled.responses, answers=sampled.answers))
    return stats


def update_phase(learner: Learner, exp: Experience, cfg: PPOConfig, opts: Options, kl_coef: float, step: int,
                 autocast, rt=None) -> tuple[dict, torch.Tensor, torch.Tensor | None]:
    """The algorithm's advantages, then its epochs of minibatch steps (ppo_update.update). A KL in
    the reward needs log pi_old first; without it yet, the update's single forward supplies it and
    then the advantages. `rt`: the runtime, where gradients are summed and clipped. Returns (stats, advantages (B, T), returns (B, T) or None)."""

    def advantages_of(exp: Experience) -> tuple:
        kl = kl_estimate(exp.old_logp, exp.ref_logp, opts.kl_estimator) if opts.kl_in_reward else None
        return ALGORITHMS[cfg.algo].advantages(exp, kl, kl_coef, opts)

    deferred = exp.old_logp is None and opts.kl_in_reward
    advantages, returns = (None, None) if deferred else advantages_of(exp)
    return update(learner.actor, learner.critic, exp, advantages_of if deferred else advantages, returns, kl_coef,
                  learner.actor_opt, learner.critic_opt, learner.schedulers, opts, autocast,
                  torch.Generator().manual_seed(cfg.seed * 1_000_003 + step), guard=learner.update_guard, step=step + 1,
                  rt=rt)


def progress_bar(cfg: PPOConfig, total_steps: int, start: int):
    from tqdm.auto import tqdm

    return tqdm(total=total_steps, initial=start, desc=f"{cfg.algo}", disable=not (cfg.progress and dist.is_main()),
                dynamic_ncols=True)


def log_step(rt, bar, learner: Learner, result: StepResult, done: int, tokens: int, t0: float,
             evaluation: dict) -> dict:
    """One line of metrics.jsonl (and the progress bar's figures); returns it."""
    line = {"step": done, "lr": learner.schedulers[0].get_last_lr()[0], "elapsed_s": time.perf_counter() - t0,
            "tokens": tokens, "skipped_steps": learner.update_guard.skipped,
            "skipped_rollouts": learner.rollout_guard.skipped, **result.figures, **evaluation}
    rt.run_dir.log(line)
    # k3 per sequence: never negative, where `kl` (the reward's estimator, k1 by default) can be on
    # one batch; metrics.jsonl keeps k1, k2 and k3
    bar.set_postfix(reward=f"{line['reward']:.3f}", kl_k3=f"{line['kl_k3']:.2f}")
    return line


def finish(rt, cfg: PPOConfig, opts: Options, learner: Learner, sampler: Sampler, gold, last: dict, tokens: int,
           train_wall: float, total_steps: int, n_prompts: int) -> Path:
    """The final evaluation, model/ and summary.json."""
    learner.actor.eval()
    overopt = learner.overopt
    final_eval = evaluate(cfg, learner, gold or sampler.scorer, rt) if cfg.eval_data else {}
    return rt.finish(learner.actor, learner.tokenizer, {
        "stage": "ppo", "algo": cfg.algo, "async_staleness": cfg.async_staleness,
        "rollout_precision": runtime.effective_precision(rollout_precision(cfg, cfg.rollout_engine), rt.device),
        **sampler.summary(),
        "samples_per_prompt": opts.k,
        "steps": overopt.stop_reason["step"] if overopt.stop_reason else total_steps,
        "stopped_early": overopt.stop_reason, "guard": overopt.summary(),
        "update_epochs": opts.epochs, "kl_in": "reward" if opts.kl_in_reward else "loss",
        "kl_estimator": opts.kl_estimator, "prompts": n_prompts,
        "skipped_steps": learner.update_guard.skipped, "skipped_rollouts": learner.rollout_guard.skipped,
        **{k: last.get(k) for k in ("reward", "reward_normalized", "gold", "kl", "kl_coef", "entropy",
                                    "response_length", "eos_rate") if k in last},
        **final_eval,
        "generated_tokens": tokens, "tokens_per_s": tokens / max(train_wall, 1e-9), "train_wall_s": train_wall,
    })


def evaluate(cfg: PPOConfig, learner: Learner, judge, rt, write_samples: bool = True) -> dict:
    """Win rate against the reference on held-out prompts (judge: gold if given, else the reward) and KL."""
    prompts = [p.prompt for p in read_prompts(cfg.eval_data)][: cfg.num_eval_prompts]
    ref = learner.reference
    if ref is None:
        ref = frozen(load_causal_lm(cfg.model).to(rt.device))
        use_fp32_attention(ref)
    sampling = SamplingConfig(cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p)
    with rt.gathered(learner.actor, ref):
        report = evaluate_policy(learner.actor, ref, learner.tokenizer, prompts, judge, sampling, seed=cfg.seed + 1,
                                 autocast=rt.autocast, max_prompt_tokens=cfg.max_length - cfg.max_new_tokens)
    samples = report.pop("samples")
    if write_samples and dist.is_main():  # every rank evaluates alike (same weights, same seed); one writes
        with open(rt.path / "eval_samples.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(s) + "\n" for s in samples)
    report["judge"] = judge.name
    return {f"eval_{k}": v for k, v in report.items()}


def write_samples(path: Path, step: int, sampled: Sampled, k: int, n: int = 4) -> None:
    """The first response to each of the global batch's first `n` prompts (k rows per prompt),
    with the sampler's per-row details where it gives them. Rank 0 writes."""
    details = sampled.details or [{}] * len(sampled.responses)
    rows = gather_rows(list(zip(sampled.prompts, sampled.responses, sampled.score.tolist(),
                                sampled.rollout.ended.tolist(), details)), k)
    if not dist.is_main():
        return
    with open(path, "a", encoding="utf-8") as f:
        for prompt, response, score, ended, extra in rows[: n * k : k]:
            f.write(strict_json({"step": step, "prompt": prompt_as_json(prompt), "response": response,
                                 "score": float(score), "ended": bool(ended), **extra}) + "\n")
