"""A policy against a reference on held-out prompts: head-to-head win rate and KL to the reference.

Both policies answer every prompt once, sampled with the same settings and seed; a judge (any
scorer: the demo's noiseless oracle `rlhf.demo.oracle:gold_reward`, a reward model, a rule)
scores both answers and the higher score wins, ties counting half. KL(policy || reference) is
measured on the policy's own samples as the mean over prompts of
sum_t [log pi(y_t | ...) - log pi_ref(y_t | ...)], an unbiased estimate of the sequence-level KL.

    from rlhf.eval.policy import evaluate_policy
    report = evaluate_policy(policy, reference, tokenizer, prompts, judge, SamplingConfig(max_new_tokens=48))
    report["win_rate"], report["ci_low"], report["ci_high"], report["kl_to_reference"]

`rlhf eval policy` (run(cfg) below) does the same from directories and writes a JSON report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..data.records import PromptText, Rollout, prompt_as_json
from ..rollout.generate import SamplingConfig, decode_responses, generate, stop_token_ids
from ..rollout.logprobs import response_logprobs
from ..rollout.scorers import Scorer
from .metrics import pairwise_outcomes, win_rate


@torch.no_grad()
def sequence_kl(policy, reference, rollout: Rollout, temperature: float = 1.0) -> torch.Tensor:
    """(B,) sum over response tokens of log pi - log pi_ref, on the rollout's tokens (sampled from pi)."""
    logp = response_logprobs(policy, rollout, temperature)
    ref_logp = response_logprobs(reference, rollout, temperature)
    return ((logp - ref_logp) * rollout.response_mask).sum(1).float()


def _sample(model, tokenizer, prompt_ids, sampling, seed, batch_size, autocast) -> tuple[list[Rollout], list[str]]:
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    stops = stop_token_ids(tokenizer, model)
    rollouts, texts = [], []
    for start in range(0, len(prompt_ids), batch_size):
        with autocast():
            rollout = generate(model, prompt_ids[start : start + batch_size], sampling, stops, tokenizer.pad_token_id,
                               generator)
        rollouts.append(rollout)
        texts.extend(decode_responses(tokenizer, rollout))
    return rollouts, texts


def evaluate_policy(
    policy,
    reference,
    tokenizer,
    prompts: Sequence[PromptText],
    judge: Scorer | Callable,
    sampling: SamplingConfig,
    seed: int = 0,
    batch_size: int = 64,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    max_prompt_tokens: int | None = None,
    scorers: dict[str, Callable] | None = None,
) -> dict:
    """Win rate of `policy` over `reference` and KL(policy || reference) on `prompts`.

    Both models share `tokenizer`. `judge(prompts, responses) -> (B,) scores`. Prompts longer
    than `max_prompt_tokens` keep their last tokens. Returns the `rlhf.eval.metrics.win_rate`
    fields (win_rate, ci_low, ci_high, n, wins, ties, losses) and kl_to_reference (nats per
    response), policy_score / reference_score (mean judge scores), policy_length /
    reference_length (mean response tokens), lengths (`length_stats` of each side), scores (the
    mean score of each side under every extra scorer in `scorers`, by name), seconds (wall time),
    and samples: one dict per prompt with both responses and scores.
    """
    from ..data.tokenize import encode_prompt

    autocast = autocast or contextlib.nullcontext
    start = time.perf_counter()
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    if max_prompt_tokens:
        prompt_ids = [ids[-max_prompt_tokens:] for ids in prompt_ids]
    was_training = policy.training
    policy.eval()
    try:
        rollouts, policy_texts = _sample(policy, tokenizer, prompt_ids, sampling, seed, batch_size, autocast)
        reference_rollouts, reference_texts = _sample(reference, tokenizer, prompt_ids, sampling, seed, batch_size, autocast)
        with autocast():
            kl = torch.cat([sequence_kl(policy, reference, r, sampling.temperature or 1.0) for r in rollouts])
    finally:
        policy.train(was_training)
    policy_scores = [float(s) for s in judge(list(prompts), policy_texts)]
    reference_scores = [float(s) for s in judge(list(prompts), reference_texts)]
    length = lambda rs: float(torch.cat([r.response_mask.sum(1) for r in rs]).float().mean())  # noqa: E731
    report = win_rate(pairwise_outcomes(policy_scores, reference_scores))
    report.update(
        kl_to_reference=float(kl.mean()),
        policy_score=sum(policy_scores) / len(policy_scores),
        reference_score=sum(reference_scores) / len(reference_scores),
        policy_length=length(rollouts),
        reference_length=length(reference_rollouts),
        lengths={"policy": length_stats(rollouts), "reference": length_stats(reference_rollouts)},
        scores={name: {"policy": sum(v := [float(x) for x in scorer(list(prompts), policy_texts)]) / len(v),
                       "reference": sum(w := [float(x) for x in scorer(list(prompts), reference_texts)]) / len(w)}
                for name, scorer in (scorers or {}).items()},
        seconds=time.perf_counter() - start,
        samples=[{"prompt": prompt_as_json(p), "policy": a, "reference": b, "policy_score": sa, "reference_score": sb}
                 for p, a, b, sa, sb in zip(prompts, policy_texts, reference_texts, policy_scores, reference_scores)],
    )
    return report


def length_stats(rollouts: list[Rollout]) -> dict:
    """Response tokens: mean, median, 10th and 90th percentiles, and the share that ended (EOS)."""
    lengths = torch.cat([r.response_mask.sum(1) for r in rollouts]).float()
    ended = torch.cat([r.ended for r in rollouts]).float()
    q10, q50, q90 = torch.quantile(lengths, torch.tensor([0.1, 0.5, 0.9])).tolist()
    return {"mean": float(lengths.mean()), "median": q50, "p10": q10, "p90": q90, "ended": float(ended.mean())}


def format_report(report: dict, judge: str) -> str:
    """The short table `rlhf eval policy` prints."""
    lines = [f"win rate                 {report['win_rate']:.3f}  (95% CI {report['ci_low']:.3f}-{report['ci_high']:.3f}; "
             f"{report['wins']} wins, {report['ties']} ties, {report['losses']} losses of {report['n']}; judge {judge})",
             f"KL to reference          {report['kl_to_reference']:.3f} nats per response",
             f"{'':<24} {'policy':>10} {'reference':>10}",
             f"{'judge score':<24} {report['policy_score']:>10.3f} {report['reference_score']:>10.3f}"]
    for name, pair in report["scores"].items():
        label = name if len(name) <= 24 else "..." + name[-21:]
        lines.append(f"{label:<24} {pair['policy']:>10.3f} {pair['reference']:>10.3f}")
    for key in ("mean", "median", "p10", "p90"):
        lines.append(f"{'length ' + key:<24} {report['lengths']['policy'][key]:>10.1f} {report['lengths']['reference'][key]:>10.1f}")
    lines.append(f"{'ended (EOS)':<24} {report['lengths']['policy']['ended']:>10.3f} {report['lengths']['reference']['ended']:>10.3f}")
    for sample in report["samples"][:3]:
        lines += ["", f"prompt     {str(sample['prompt'])[:100]!r}",
                  f"policy     {sample['policy'][:100]!r}  ({sample['policy_score']:.3f})",
                  f"reference  {sample['reference'][:100]!r}  ({sample['reference_score']:.3f})"]
    return "\n".join(lines)


def run(cfg) -> Path | str:
    """`rlhf eval policy`: load both models and the judge, evaluate, print, write cfg.out."""
    from ..data.formats import read_prompts
    from ..models.load import load_causal_lm, load_tokenizer
    from ..rollout.attention import use_fp32_attention
    from ..rollout.scorers import load_scorer
    from ..runtime import autocast, pick_device

    if not (cfg.model and cfg.reference and cfg.data and cfg.judge):
        raise ValueError("eval policy needs --model DIR --reference DIR --data PROMPTS --judge SCORER")
    device = pick_device(cfg.device)
    tokenizer = load_tokenizer(cfg.model)
    if load_tokenizer(cfg.reference).get_vocab() != tokenizer.get_vocab():
        raise ValueError("the policy and the reference must share a tokenizer (KL is measured token by token)")
    policy = load_causal_lm(cfg.model).to(device).eval()
    reference = load_causal_lm(cfg.reference).to(device).eval()
    for model in (policy, reference):
        use_fp32_attention(model)  # CPU only: see rlhf.rollout.attention
    prompts = [p.prompt for p in read_prompts(cfg.data)]
    if cfg.max_prompts:
        prompts = prompts[: cfg.max_prompts]
    sampling = SamplingConfig(cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p)
    scorers = {spec: load_scorer(spec, device) for spec in cfg.scorers}
    report = evaluate_policy(policy, reference, tokenizer, prompts, load_scorer(cfg.judge, device), sampling,
                             seed=cfg.seed, batch_size=cfg.batch_size,
                             autocast=lambda: autocast(cfg.precision, device), scorers=scorers)
    print(format_report(report, cfg.judge))
    if cfg.out:
        out = Path(cfg.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"config": dataclasses.asdict(cfg), **report}, indent=2) + "\n", encoding="utf-8")
        return out
    return "stdout"
