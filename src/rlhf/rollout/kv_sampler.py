"""The built-in sampler of `rlhf ppo`: k responses per prompt from the policy's own KV-cache
`generate`, scored by a reward (a reward model or any `module:function`, `rlhf.rollout.scorers`),
shaped, and, with dynamic sampling (DAPO, Yu et al. 2025), only the groups whose rewards differ
kept, sampling more prompts until the batch is full.

Scoring passes each row's reference answer (the prompt row's optional "answer" field) to
rewards that take one (rlhf.rewards), and keeps the named parts a reward reports
(`reward/<name>` in metrics.jsonl). Shaping, in order: the reward model's normalisation, the
clip, the missing-EOS penalty, DAPO's soft overlong penalty.

Each row's sampling noise is seeded by (seed, step, round, its global row) (rlhf.rollout.shard),
so a step draws the same samples whatever the process count and after a resume; dynamic
sampling decides which groups to keep over the whole global round.

Shapes: B rows = prompts x k samples (the k samples of a prompt consecutive), P prompt tokens
(left-padded), T response tokens (right-padded).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..algos import informative_groups, overlong_penalty
from ..config import PPOConfig
from ..data.records import Prompt
from ..data.tokenize import encode_prompt
from ..runtime import autocast, dist
from .experience import Sampled, concat_sampled, select_rows
from .generate import SamplingConfig, decode_responses, generate, hashed_row_seeds, stop_token_ids
from .sampler import Sampler
from .scorers import ENSEMBLE_STD, Scorer
from .shard import gather_sampled, global_mean, global_rows, shard_sampled


class KVCacheSampler(Sampler):
    """k samples of each prompt with `generate`, scored by `scorer` and shaped as `cfg` says (see
    the module docstring). `pool`: every prompt of the run, where dynamic sampling draws its
    extra rounds from."""

    def __init__(self, tokenizer, scorer: Scorer, cfg: PPOConfig, k: int, pool: list[Prompt] = (),
                 dynamic_sampling: bool = False, max_rounds: int = 4):
        self.tokenizer, self.scorer, self.cfg, self.k = tokenizer, scorer, cfg, k
        self.pool, self.dynamic_sampling, self.max_rounds = list(pool), dynamic_sampling, max_rounds
        self.sampling = SamplingConfig(cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p)
        self.precision = rollout_precision(cfg, engine="rlhf")

    @torch.no_grad()
    def sample(self, policy, prompts: list[Prompt], step: int) -> Sampled:
        pad_id = self.tokenizer.pad_token_id
        sampled, stats = self.sample_round(policy, prompts, step, 0), {}
        if self.dynamic_sampling:  # which groups to keep is decided on the whole global round
            def more(round_: int) -> Sampled:  # another round, over every rank
                return gather_sampled(self.sample_round(policy, self.extra_prompts(step, round_), step, round_),
                                      self.k, pad_id)

            batch, stats = dynamic_sampling(gather_sampled(sampled, self.k, pad_id), more,
                                            len(prompts) * dist.world_size(), self.k, self.max_rounds, pad_id)
            sampled = shard_sampled(batch, self.k)
        if ENSEMBLE_STD in sampled.parts:  # an ensemble reward's disagreement (as rollout.scorers.ensemble_stats)
            stats["reward_std"] = global_mean(torch.as_tensor(sampled.parts[ENSEMBLE_STD]))
        sampled.stats = stats
        return sampled

    def sample_round(self, policy, prompts: list[Prompt], step: int, round_: int) -> Sampled:
        """One round: k samples of each prompt, scored and shaped; rows seeded by (seed, step,
        round, global row)."""
        cfg, room = self.cfg, self.cfg.max_length - self.cfg.max_new_tokens
        prompt_ids = [encode_prompt(self.tokenizer, p.prompt)[-room:] for p in prompts]
        rows = [ids for ids in prompt_ids for _ in range(self.k)]
        seeds = hashed_row_seeds((cfg.seed, step, round_), global_rows(len(rows), self.k))
        rollout = self.generate_rows(policy, rows, seeds)
        responses = decode_responses(self.tokenizer, rollout)
        texts = [p.prompt for p in prompts for _ in range(self.k)]
        answers = [p.answer for p in prompts for _ in range(self.k)]
        raw, parts = self.scorer.score(texts, responses, allow_non_finite=True, answers=answers)
        raw = raw.to(rollout.response_ids.device)
        return Sampled(rollout, texts, answers, responses, raw, shape_score(raw, rollout.response_mask,
                                                                           rollout.ended, self.scorer, cfg), parts)

    def generate_rows(self, policy, rows: list[list[int]], seeds: list[int]):
        """One response to each row of prompt token ids, row i's noise seeded by seeds[i]: a
        `Rollout`. Here the policy's own KV-cache `generate`; an engine's sampler overrides it
        (`rlhf.rollout.vllm_sampler`) and keeps the scoring and shaping around it."""
        device = next(policy.parameters()).device
        with autocast(self.precision, device):
            return generate(policy, rows, self.sampling, stop_token_ids(self.tokenizer, policy),
                            self.tokenizer.pad_token_id, row_seeds=seeds)

    def extra_prompts(self, step: int, round_: int) -> list[Prompt]:
        """This rank's share of dynamic sampling's prompts for another round: `cfg.batch_size`
        prompts of the pool drawn without replacement, seeded by (seed, step, round) so that a
        resumed run draws the same ones."""
        draw = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step * 1_009 + round_)
        index = torch.randperm(len(self.pool), generator=draw)[: self.cfg.batch_size].tolist()
        return [self.pool[i] for i in index][dist.rank() :: dist.world_size()]

    def summary(self) -> dict:
        return {"sampler": "kv-cache", "reward": self.scorer.name}


def rollout_precision(cfg: PPOConfig, engine: str) -> str:
    """The precision the sampler is asked to compute in ("fp32" or "bf16"; bf16 runs only where
    the device has it natively: rlhf.runtime.effective_precision): --rollout-precision, or for
    "auto" the trainer's --precision in the built-in sampler and fp32 in an engine (whose fp32
    log-probs match the trainer's within 1e-5: docs/vllm.md)."""
    if cfg.rollout_precision != "auto":
        return cfg.rollout_precision
    return cfg.precision if engine == "rlhf" else "fp32"


def shape_score(raw: Tensor, response_mask: Tensor, ended: Tensor, scorer: Scorer, cfg: PPOConfig) -> Tensor:
    """(B,) float32 the sequence reward from the raw (B,) score: the scorer's normalisation, the
    clip, the missing-EOS penalty and the soft overlong penalty, as `cfg` asks; response_mask
    (B, T), ended (B,)."""
    score = scorer.normalize(raw) if cfg.normalize_reward else raw
    if cfg.reward_clip > 0:
        score = score.clamp(-cfg.reward_clip, cfg.reward_clip)
    score = score - cfg.missing_eos_penalty * (~ended).float()
    if cfg.overlong_buffer:
        score = score + overlong_penalty(response_mask.sum(1), cfg.max_new_tokens, cfg.overlong_buffer,
                                         cfg.overlong_penalty)
    return score.float()


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
