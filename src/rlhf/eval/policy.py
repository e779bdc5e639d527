"""A policy against a reference on held-out prompts: head-to-head win rate and KL to the reference.

Both policies answer every prompt once, sampled with the same settings and seed; a judge (any
scorer: the demo's noiseless oracle `rlhf.demo.oracle:gold_reward`, a reward model, a rule)
scores both answers and the higher score wins, ties counting half. KL(policy || reference) is
measured on the policy's own samples as the mean over prompts of sum_t KL(pi(.|y_<t) || pi_ref(.|y_<t)),
the exact KL of the two next-token distributions summed over the response
(`rlhf.algos.kl_exact`): an unbiased estimate of the sequence-level KL that is never negative.
The sampled k1 estimate, sum_t [log pi(y_t | ...) - log pi_ref(y_t | ...)], also unbiased but
negative on some samples (and, near KL 0, often in the mean), is kept as `kl_to_reference_k1`.

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
from ..algos.kl_exact import exact_token_kl
from ..algos.logprobs import token_logprobs
from ..rollout.logprobs import response_logits
from ..rollout.scorers import Scorer
from .metrics import length_controlled_win_rate, pairwise_outcomes, win_rate


def kl_estimates(logits: torch.Tensor, ref_logits: torch.Tensor, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (B,) estimates of KL(pi || pi_ref) per response of `rollout` (sampled from pi), from
    the (B, T, V) logits of both models at its response positions (`response_logits`): the exact
    per-position KL summed over the response (never negative), and the sampled k1 sum of
    log pi - log pi_ref over its tokens (can be negative). See the module docstring."""
    mask, ids = rollout.response_mask, rollout.response_ids
    exact = (exact_token_kl(logits, ref_logits) * mask).sum(1)
    k1 = (token_logprobs(logits, ids, chunk_size=8) - token_logprobs(ref_logits, ids, chunk_size=8)) * mask
    return exact, k1.sum(1).float()


@torch.no_grad()
def sequence_kl(policy, reference, rollout: Rollout, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """`kl_estimates` (exact, k1), each (B,), of the two models on the rollout's tokens."""
    return kl_estimates(response_logits(policy, rollout, temperature), response_logits(reference, rollout, temperature),
                        rollout)


def _sample(model, tokenizer, prompt_ids, sampling, seed, batch_size, autocast, progress: bool = False,
            desc: str = "sampling") -> tuple[list[Rollout], list[str]]:
    from tqdm.auto import tqdm

    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    stops = stop_token_ids(tokenizer, model)
    rollouts, texts = [], []
    for start in tqdm(range(0, len(prompt_ids), batch_size), desc=desc, disable=not progress, dynamic_ncols=True):
        with autocast():
            rollout = generate(model, prompt_ids[start : start + batch_size], sampling, stops, tokenizer.pad_token_id,
                               generator)
        rollouts.append(rollout)
        texts.extend(decode_responses(tokenizer, rollout))
    return rollouts, texts


# (reference_key, prompt ids, sampling, seed, batch size) -> (rollouts, texts) of the last reference sampled
_REFERENCE_SAMPLES: dict[tuple, tuple[list[Rollout], list[str]]] = {}


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
    progress: bool = False,
    reference_key: str | None = None,
) -> dict:
    """Win rate of `policy` over `reference` and KL(policy || reference) on `prompts`.

    Both models share `tokenizer`. `judge(prompts, responses) -> (B,) scores`. Prompts longer
    than `max_prompt_tokens` keep their last tokens. Returns the `rlhf.eval.metrics.win_rate`
    fields (win_rate, ci_low, ci_high, n, wins, ties, losses), lc_win_rate / lc_ci_low / lc_ci_high /
    length_coef (`length_controlled_win_rate`), policy_eos_share / reference_eos_share (share of
    responses that ended with a stop token), kl_to_reference (nats per
    response, exact per-position KL; kl_to_reference_k1 the sampled k1 figure), policy_score /
    reference_score (mean judge scores), policy_length / reference_length (mean response tokens), lengths (`length_stats` of each side), scores (the
    mean score of each side under every extra scorer in `scorers`, by name), seconds (wall time),
    and samples: one dict per prompt with both responses and scores. `progress` shows a bar per
    side while sampling. `reference_key` names the reference's weights (directory and modification
    time): the reference's samples are then kept in this process and reused by the next
    evaluation against the same reference, prompts, sampling, seed and batch size (sampling is
    seeded, so they are the very samples it would draw again).
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
        rollouts, policy_texts = _sample(policy, tokenizer, prompt_ids, sampling, seed, batch_size, autocast,
                                         progress, "sampling the policy")
        cache_key = (reference_key, tuple(map(tuple, prompt_ids)), sampling, seed, batch_size) if reference_key else None
        if cache_key is not None and cache_key in _REFERENCE_SAMPLES:
            reference_rollouts, reference_texts = _REFERENCE_SAMPLES[cache_key]
        else:
            reference_rollouts, reference_texts = _sample(reference, tokenizer, prompt_ids, sampling, seed, batch_size,
                                                          autocast, progress, "sampling the reference")
            if cache_key is not None:
                _REFERENCE_SAMPLES.clear()  # one reference at a time: the demo evaluates every policy against SFT
                _REFERENCE_SAMPLES[cache_key] = (reference_rollouts, reference_texts)
        with autocast():
            estimates = [sequence_kl(policy, reference, r, sampling.temperature or 1.0) for r in rollouts]
        kl, kl_k1 = torch.cat([exact for exact, _ in estimates]), torch.cat([k1 for _, k1 in estimates])
    finally:
        policy.train(was_training)
    policy_scores = [float(s) for s in judge(list(prompts), policy_texts)]
    reference_scores = [float(s) for s in judge(list(prompts), reference_texts)]
    length = lambda rs: float(torch.cat([r.response_mask.sum(1) for r in rs]).float().mean())  # noqa: E731
    outcomes = pairwise_outcomes(policy_scores, reference_scores)
    report = win_rate(outcomes)
    # Length-controlled win rate (AlpacaEval 2): the judge's preference at equal response length.
    per_response = lambda rs: torch.cat([r.response_mask.sum(1) for r in rs]).float().tolist()  # noqa: E731
    report.update(length_controlled_win_rate(outcomes, per_response(rollouts), per_response(reference_rollouts),
                                             seed=seed))
    report.update(
        kl_to_reference=float(kl.mean()),
        kl_to_reference_k1=float(kl_k1.mean()),
        policy_score=sum(policy_scores) / len(policy_scores),
        reference_score=sum(reference_scores) / len(reference_scores),
        policy_length=length(rollouts),
        reference_length=length(reference_rollouts),
        lengths={"policy": length_stats(rollouts), "reference": length_stats(reference_rollouts)},
        policy_eos_share=float(torch.cat([r.ended for r in rollouts]).float().mean()),  # responses that ended (EOS)
        reference_eos_share=float(torch.cat([r.ended for r in reference_rollouts]).float().mean()),
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
             *([f"length-controlled        {report['lc_win_rate']:.3f}  (95% CI {report['lc_ci_low']:.3f}-"
                f"{report['lc_ci_high']:.3f}; win rate at equal length, AlpacaEval 2's regression)"]
               if "lc_win_rate" in report else []),  # reports written before it existed have none
             f"KL to reference          {report['kl_to_reference']:.3f} nats per response (exact per-token KL, "
             f"never negative; sampled k1 estimate {report.get('kl_to_reference_k1', float('nan')):.3f})",
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


def _weights_key(model_dir: str, precision: str, device) -> str:
    """A name for a model's weights as they are now: directory, files' modification times, how it computes."""
    from ..models.load import resolve_model_dir

    path = resolve_model_dir(model_dir).resolve()
    stamps = sorted((f.name, f.stat().st_mtime_ns) for f in path.glob("*.safetensors"))
    return f"{path}|{stamps}|{precision}|{device}"


def run(cfg) -> Path | str:
    """`rlhf eval policy`: load both models and the judge, evaluate, print, write cfg.out."""
    from ..data.formats import read_prompts
    from ..models import compat
    from ..models.load import load_causal_lm, load_tokenizer
    from ..rollout.attention import use_fp32_attention
    from ..rollout.scorers import load_scorer
    from .. import runtime

    if not (cfg.model and cfg.reference and cfg.data and cfg.judge):
        raise ValueError("eval policy needs --model DIR --reference DIR --data PROMPTS --judge SCORER")
    if not cfg.progress:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # the "Loading weights" bars of the model loads
    rt = runtime.init(cfg, run_dir=False)  # its result is one JSON file (cfg.out), not a run directory
    device = rt.device
    tokenizer = load_tokenizer(cfg.model)
    compat.check_shared_tokenizer(tokenizer, cfg.reference, "--reference")  # KL is measured token by token
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
                             autocast=rt.autocast, scorers=scorers, progress=cfg.progress,
                             max_prompt_tokens=cfg.max_length - cfg.max_new_tokens,
                             reference_key=_weights_key(cfg.reference, cfg.precision, device))
    print(format_report(report, cfg.judge))
    if cfg.out:
        out = Path(cfg.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"config": dataclasses.asdict(cfg), **report}, indent=2) + "\n", encoding="utf-8")
        return out
    return "stdout"
