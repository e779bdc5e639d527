"""The sampling half of `rlhf ppo`'s rollout phase: sample k responses per prompt, score them,
shape the score, and, with dynamic sampling (DAPO, Yu et al. 2025), keep only the groups whose
rewards differ, sampling more prompts until the batch is full.

Scoring passes each row's reference answer (the prompt row's optional "answer" field) to
rewards that take one (rlhf.rewards), and keeps the named parts a reward reports
(`reward/<name>` in metrics.jsonl). Shaping, in order: the reward model's normalisation, the
clip, the missing-EOS penalty, DAPO's soft overlong penalty.

Shapes: B rows = prompts x k samples (the k samples of a prompt consecutive), P prompt tokens
(left-padded), T response tokens (right-padded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..algos import informative_groups, overlong_penalty
from ..data.records import Rollout
from ..data.tokenize import encode_prompt
from ..rollout.generate import decode_responses, generate, stop_token_ids


@dataclass
class Sampled:
    """Scored samples of one or more sampling rounds."""

    rollout: Rollout  # (B, P) prompts, (B, T) responses, sampler log-probs, ended (B,)
    prompts: list  # (B,) the prompt of each row (text or conversation)
    answers: list  # (B,) the row's reference answer (str) or None
    responses: list[str]  # (B,) decoded responses
    raw: Tensor  # (B,) the scorer's output
    score: Tensor  # (B,) the shaped sequence reward the advantages start from
    parts: dict[str, Tensor]  # name -> (B,) the reward's named parts (rlhf.rewards.Scores), raw


def sample_and_score(actor, scorer, tokenizer, prompts: list, prompt_ids: list[list[int]], answers: list, cfg, opts,
                     sampling, row_seeds: list[int], autocast) -> Sampled:
    """k samples of each prompt, scored and shaped (see the module docstring). row_seeds: one
    seed per row (prompts x k), each row's own random stream (rlhf.rollout.generate)."""
    rows = [ids for ids in prompt_ids for _ in range(opts.k)]
    with autocast():
        rollout = generate(actor, rows, sampling, stop_token_ids(tokenizer, actor), tokenizer.pad_token_id,
                           row_seeds=row_seeds)
    responses = decode_responses(tokenizer, rollout)
    texts_in = [p for p in prompts for _ in range(opts.k)]
    answers_in = [a for a in answers for _ in range(opts.k)]
    raw, parts = scorer.score(texts_in, responses, allow_non_finite=True, answers=answers_in)
    device = rollout.response_ids.device
    raw = raw.to(device)
    score = scorer.normalize(raw) if cfg.normalize_reward else raw
    if cfg.reward_clip > 0:
        score = score.clamp(-cfg.reward_clip, cfg.reward_clip)
    score = score - cfg.missing_eos_penalty * (~rollout.ended).float()
    if cfg.overlong_buffer:
        lengths = rollout.response_mask.sum(1)
        score = score + overlong_penalty(lengths, cfg.max_new_tokens, cfg.overlong_buffer, cfg.overlong_penalty)
    return Sampled(rollout, texts_in, answers_in, responses, raw, score.float(), parts)


def _pad(t: Tensor, width: int, value, left: bool) -> Tensor:
    pad = torch.full((t.shape[0], width - t.shape[1]), value, dtype=t.dtype, device=t.device)
    return torch.cat([pad, t] if left else [t, pad], dim=1)


def concat_rollouts(rollouts: list[Rollout], pad_id: int) -> Rollout:
    """Rollouts of several sampling rounds as one: prompts left-padded and responses right-padded to
    the widest (the forward passes count positions over real tokens only, so padding changes nothing)."""
    p = max(r.prompt_ids.shape[1] for r in rollouts)
    t = max(r.response_ids.shape[1] for r in rollouts)
    return Rollout(
        torch.cat([_pad(r.prompt_ids, p, pad_id, left=True) for r in rollouts]),
        torch.cat([_pad(r.prompt_mask, p, 0, left=True) for r in rollouts]),
        torch.cat([_pad(r.response_ids, t, pad_id, left=False) for r in rollouts]),
        torch.cat([_pad(r.response_mask, t, 0, left=False) for r in rollouts]),
        torch.cat([_pad(r.logprobs, t, 0.0, left=False) for r in rollouts]),
        torch.cat([r.ended for r in rollouts]),
    )


def concat_sampled(rounds: list[Sampled], pad_id: int) -> Sampled:
    """The samples of several rounds as one batch, in order."""
    if len(rounds) == 1:
        return rounds[0]
    names = set.intersection(*(set(s.parts) for s in rounds))
    return Sampled(concat_rollouts([s.rollout for s in rounds], pad_id), [p for s in rounds for p in s.prompts],
                   [a for s in rounds for a in s.answers], [r for s in rounds for r in s.responses],
                   torch.cat([s.raw for s in rounds]), torch.cat([s.score for s in rounds]),
                   {n: torch.cat([s.parts[n] for s in rounds]) for n in sorted(names)})


def select_rows(s: Sampled, index: Tensor) -> Sampled:
    """The rows `index` (1-D long) of `s`."""
    r = s.rollout
    rows = index.tolist()
    return Sampled(Rollout(r.prompt_ids[index], r.prompt_mask[index], r.response_ids[index], r.response_mask[index],
                           r.logprobs[index], r.ended[index]),
                   [s.prompts[i] for i in rows], [s.answers[i] for i in rows], [s.responses[i] for i in rows],
                   s.raw[index], s.score[index], {n: v[index] for n, v in s.parts.items()})


def dynamic_sampling(first: Sampled, more: Callable[[int], Sampled] | None, groups: int, k: int, max_rounds: int,
                     pad_id: int) -> tuple[Sampled, dict]:
    """DAPO's dynamic sampling: keep the groups of k samples whose scores are not all equal
    (`rlhf.algos.informative_groups`), calling `more(round)` for another round of samples until
    `groups` groups are kept or `max_rounds` rounds are spent; a batch still short is filled with
    dropped groups (their advantage is 0 under a group baseline), so every step trains on the
    same number of rows. The kept groups come first, in sampling order.

    Returns (the batch of groups * k rows, stats): dropped_group_share (of every group sampled),
    sampling_rounds, filled_groups (dropped groups used to fill the batch), reward_sampled (the
    mean raw reward of every response sampled, the honest figure beside the trained batch's)."""
    rounds = [first]
    kept_groups = int(informative_groups(first.score, k).sum())
    while kept_groups < groups and len(rounds) < max_rounds and more is not None:
        rounds.append(more(len(rounds)))
        kept_groups += int(informative_groups(rounds[-1].score, k).sum())
    pool = concat_sampled(rounds, pad_id)
    informative = informative_groups(pool.score, k)
    kept = torch.nonzero(informative).flatten()[:groups]
    filler = torch.nonzero(~informative).flatten()[: groups - len(kept)]
    chosen = torch.cat([kept, filler])
    rows = (chosen[:, None] * k + torch.arange(k)).flatten().to(pool.score.device)
    stats = {"dropped_group_share": float((~informative).float().mean()), "sampling_rounds": len(rounds),
             "filled_groups": len(filler), "reward_sampled": float(pool.raw.mean())}
    return select_rows(pool, rows), stats


def extra_prompts(prompts: list, answers: list, tokenizer, cfg, step: int, round_: int) -> tuple[list, list, list]:
    """Dynamic sampling's prompts for another round: `cfg.batch_size` prompts drawn without
    replacement, seeded by (seed, step, round) so that a resumed run draws the same ones.
    Returns (prompts, their token ids cut from the left to leave room for the response, answers)."""
    draw = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 1_009 + round_)
    index = torch.randperm(len(prompts), generator=draw)[: cfg.batch_size].tolist()
    room = cfg.max_length - cfg.max_new_tokens
    return ([prompts[i] for i in index], [encode_prompt(tokenizer, prompts[i])[-room:] for i in index],
            [answers[i] for i in index])
