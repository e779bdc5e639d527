"""One real `rlhf ppo` step at learning rate 0: the rollout phase and the update phase of the
stage (`rlhf.train.ppo.ppo_step`'s sampler, `experience_of` and `update_phase`) with the real models, on the
first batch of the run.

At lr 0 nothing moves, so the policy that computes the new log-probabilities is the policy that
sampled: every ratio pi/pi_old must be exactly 1, no token clipped, the approximate KL 0 and the
weights unchanged. A ratio off 1 means the update's forward is not the rollout's (dropout left
on, another temperature or precision, a padding or position mismatch) and every real step
carries that error into its clipping.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from .. import runtime
from ..config import PPOConfig
from ..data.formats import read_prompts
from ..rollout.logprobs import response_logprobs
from ..train import loop, ppo
from ..train.ppo_update import loss_mask_of
from .checks import FAIL, PASS, WARN, Check


@dataclasses.dataclass
class StepResult:
    stats: dict  # the update's own statistics (ratio_mean, ratio_first, clipfrac, approx_kl, ...)
    max_ratio_error: float  # max |pi/pi_old - 1| over response tokens, recomputed after the update
    changed: list[str]  # actor parameters that differ after the step
    ended: float  # share of sampled responses that reached a stop token within max_new_tokens
    response_tokens: float  # mean sampled response length
    seconds: float  # wall time of the step (rollout + update)
    trained_tokens: int  # response tokens the loss reads (0: --mask-truncated masked every response)


def run_step(cfg: PPOConfig) -> StepResult:
    """Build the stage's models and sampler as `rlhf.train.ppo.run` does, then one rollout + update at lr 0."""
    cfg = dataclasses.replace(cfg, lr=0.0, progress=False)
    runtime.seed_everything(cfg.seed)
    device = runtime.pick_device(cfg.device)
    opts = ppo.resolve_options(cfg)
    autocast = lambda: runtime.autocast(cfg.precision, device)  # noqa: E731
    prompts = read_prompts(cfg.data, skip_bad_rows=cfg.skip_bad_rows)
    actor, tokenizer, reference = ppo.build_policy(cfg, device)
    sampler = ppo.build_sampler(cfg, opts, tokenizer, prompts, device)
    learner = ppo.build_learner(cfg, opts, actor, tokenizer, reference, sampler.scorer, 1, None)
    plan = loop.BatchPlan(len(prompts), cfg.batch_size, cfg.seed)
    before = {k: v.detach().clone() for k, v in actor.state_dict().items()}

    actor.train()
    t0 = time.perf_counter()
    exp = ppo.experience_of(sampler.sample(actor, [prompts[i] for i in plan.micro_batch(0)], 0), learner, cfg, opts,
                            autocast)
    stats, _, _ = ppo.update_phase(learner, exp, cfg, opts, learner.kl_ctl.value, 0, autocast)
    seconds = time.perf_counter() - t0

    with torch.no_grad(), autocast():  # the policy after the step, in training mode as the update sees it
        logp = response_logprobs(actor, exp.rollout, opts.temperature)
    ratio_error = ((logp.float() - exp.old_logp.float()).exp() - 1).abs() * exp.mask
    changed = [k for k, v in actor.state_dict().items() if not torch.equal(v, before[k])]
    mask = exp.mask
    return StepResult(stats, float(ratio_error.max()), changed, float(exp.rollout.ended.float().mean()),
                      float(mask.sum(1).float().mean()), seconds, int(loss_mask_of(exp, opts).sum()))


def lr0_check(result: StepResult) -> Check:
    """PASS only when the ratio is exactly 1, nothing is clipped, the approximate KL is 0 and no
    weight moved."""
    s = result.stats
    if result.trained_tokens == 0:  # every mean over the mask is 0 and tells nothing
        return Check("ppo step at lr 0", WARN, "no response token reaches the loss: every sampled response hit "
                     "--max-new-tokens and --mask-truncated masks them all; raise --max-new-tokens to check the step")
    figures = (f"ratio mean {s['ratio_mean']:.9g} (max |ratio-1| {result.max_ratio_error:.3g}), "
               f"clipfrac {s.get('clipfrac', 0.0):.3g}, approx KL {s['approx_kl']:.3g}, "
               f"{len(result.changed)} weights changed")
    problems = []
    if s["ratio_mean"] != 1.0 or s.get("ratio_first", 1.0) != 1.0 or result.max_ratio_error != 0.0:
        problems.append("ratio != 1: the update's forward differs from the rollout's (dropout on? another "
                        "temperature or precision?)")
    if s.get("clipfrac", 0.0) != 0.0:
        problems.append("tokens clipped at lr 0")
    if s["approx_kl"] != 0.0:
        problems.append("approx KL != 0")
    if result.changed:
        problems.append(f"weights moved at lr 0: {', '.join(result.changed[:3])}")
    if problems:
        return Check("ppo step at lr 0", FAIL, figures + "; " + "; ".join(problems))
    return Check("ppo step at lr 0", PASS, figures)
