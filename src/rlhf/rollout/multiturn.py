"""Multi-turn rollouts: the policy's turns alternate with an environment's (a tool, a user, a game).

    record = rollout(policy, tokenizer, prompts, CalculatorEnv(), SamplingConfig(16), stop_strings=("</calc>",))
    record.reward          # (B,) the environment's rewards summed over each episode
    record.response_mask   # (B, T) 1 on the policy's own tokens only: the loss mask
    record.token_mask      # (B, T) 1 on every real token after the prompt, environment's included

An environment is a callable `(history: list[Turn]) -> (observation text or None, reward)` (see
`rlhf.rollout.envs`). Each turn, every unfinished episode samples one policy turn (batched, KV
cache, `rlhf.rollout.generate`), which ends at a stop token, at one of `stop_strings` (e.g. the
end of a tool call) or after `sampling.max_new_tokens` tokens; the environment reads the history
and answers. Its observation is tokenised and appended; None ends the episode.

The token ids of the policy's turns are kept exactly as sampled, never decoded and re-encoded:
a tokenizer can encode a decoded text into other ids than the ones sampled (BPE merges across
the boundary of two turns, a token completing a stop string with text after it), and the
log-probabilities the update optimises are those of the sampled ids. Only the environment's
text is tokenised.

`MultiTurnSampler` puts these episodes behind the trainer's seam (`rlhf.rollout.sampler`):
`rlhf ppo` trains on them as on its own samples, the episode's return as the reward.

`MultiTurnRollout` is a `Rollout` whose response holds every turn after the prompt and whose
`response_mask` is the loss mask: 1 on policy tokens, 0 on environment tokens. Its
`attention_mask` uses `token_mask` instead, so a forward pass (`rlhf.rollout.logprobs`) sees the
whole conversation, while log-probabilities, losses, KL and entropy, all masked by
`response_mask`, count only the policy's tokens: environment tokens carry no gradient. So the
ordinary update of `rlhf ppo` (`rlhf.train.ppo_update.update`) trains on it unchanged.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..data.collate import pad_left, pad_right
from ..data.records import Prompt, Rollout
from ..data.tokenize import encode_prompt
from ..runtime import autocast as precision_autocast
from ..runtime import dist
from .envs import Turn
from .experience import Sampled
from .generate import SamplingConfig, generate, hashed_row_seeds, stop_token_ids
from .sampler import Sampler
from .shard import global_mean

Environment = Callable[[Sequence[Turn]], tuple]  # history -> (observation text or None, reward)


@dataclass
class MultiTurnRollout(Rollout):
    """Episodes of alternating turns. B episodes, prompts left-padded to P, turns right-padded to T.

    Inherited fields: prompt_ids / prompt_mask (B, P); response_ids (B, T) every token after the
    prompt (policy and environment, pad after the last); response_mask (B, T) 1 on POLICY tokens
    only (the loss mask); logprobs (B, T) sampler log-probs of policy tokens, 0 elsewhere; ended
    (B,) True where the environment ended the episode (not the turn limit)."""

    token_mask: Tensor  # (B, T) 1 on every real token after the prompt, policy and environment alike
    reward: Tensor  # (B,) float32, the environment's rewards summed over the episode
    turns: Tensor  # (B,) int64, policy turns taken
    histories: list  # B lists of Turn: the prompt, then each policy and environment turn as text

    @property
    def attention_mask(self) -> Tensor:
        """(B, P+T) 1 on every real token: the policy reads the environment's observations."""
        return torch.cat([self.prompt_mask, self.token_mask], dim=1)

    def rows(self, index: Tensor) -> "MultiTurnRollout":
        """The episodes `index` (a minibatch), every field kept."""
        tensors = {name: getattr(self, name)[index] for name in
                   ("prompt_ids", "prompt_mask", "response_ids", "response_mask", "logprobs", "ended", "token_mask",
                    "reward", "turns")}
        return MultiTurnRollout(**tensors, histories=[self.histories[i] for i in index.tolist()])


def _cut_at_stop_string(tokenizer, ids: list[int], stop_strings: Sequence[str]) -> int:
    """How many of a turn's sampled `ids` to keep: up to the token that completes the first stop
    string (its text may run past the string), or all of them."""
    if not stop_strings or not any(s in tokenizer.decode(ids) for s in stop_strings):
        return len(ids)
    for n in range(1, len(ids) + 1):
        if any(s in tokenizer.decode(ids[:n]) for s in stop_strings):
            return n
    return len(ids)


@dataclass
class _Episode:
    prompt_ids: list[int]
    history: list[Turn]
    ids: list[int]  # every token after the prompt
    is_policy: list[int]  # 1 where ids[i] was sampled by the policy
    logprobs: list[float]
    reward: float = 0.0
    turns: int = 0
    ended: bool = False
    done: bool = False


@torch.no_grad()
def rollout(model, tokenizer, prompts: Sequence[str], env: Environment, sampling: SamplingConfig,
            max_turns: int = 4, stop_strings: Sequence[str] = (), generator: torch.Generator | None = None,
            autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
            max_prompt_tokens: int | None = None) -> MultiTurnRollout:
    """Run one episode per prompt with at most `max_turns` policy turns (see the module docstring).

    prompts: B plain-text prompts (or conversations, rendered by the chat template). A policy
    turn ends at a stop token of the tokenizer/model, at any of `stop_strings` or after
    `sampling.max_new_tokens` tokens. `generator` (on the model's device) makes it reproducible;
    `autocast` is a zero-argument callable giving the context to sample under."""
    if max_turns < 1:
        raise ValueError(f"max_turns must be >= 1, got {max_turns}")
    autocast = autocast or contextlib.nullcontext
    episodes = []
    for prompt in prompts:
        ids = encode_prompt(tokenizer, prompt)
        episodes.append(_Episode(ids[-max_prompt_tokens:] if max_prompt_tokens else ids, [Turn("prompt", prompt)],
                                 [], [], []))
    stops = stop_token_ids(tokenizer, model)
    for turn in range(max_turns):
        active = [e for e in episodes if not e.done]
        if not active:
            break
        with autocast():
            sampled = generate(model, [e.prompt_ids + e.ids for e in active], sampling, stops, tokenizer.pad_token_id,
                               generator)
        for row, episode in enumerate(active):
            length = int(sampled.response_mask[row].sum())
            ids = sampled.response_ids[row, :length].tolist()
            keep = _cut_at_stop_string(tokenizer, ids, stop_strings)
            episode.ids += ids[:keep]
            episode.is_policy += [1] * keep
            episode.logprobs += sampled.logprobs[row, :keep].tolist()
            episode.history.append(Turn("policy", tokenizer.decode(ids[:keep], skip_special_tokens=True)))
            episode.turns += 1
            observation, reward = env(episode.history)
            episode.reward += float(reward)
            if observation is None:
                episode.done = episode.ended = True
            elif turn == max_turns - 1:  # no policy turn would read it
                episode.done = True
            else:
                obs_ids = tokenizer(observation, add_special_tokens=False)["input_ids"]
                episode.ids += obs_ids
                episode.is_policy += [0] * len(obs_ids)
                episode.logprobs += [0.0] * len(obs_ids)
                episode.history.append(Turn("env", observation))
    return _to_record(episodes, tokenizer.pad_token_id, next(model.parameters()).device)


def _to_record(episodes: list[_Episode], pad_id: int, device) -> MultiTurnRollout:
    prompt_ids = pad_left([e.prompt_ids for e in episodes], pad_id)
    prompt_mask = pad_left([[1] * len(e.prompt_ids) for e in episodes], 0)
    width = max(1, max(len(e.ids) for e in episodes))
    fill = lambda rows, value: pad_right([r + [value] * (width - len(r)) for r in rows], value)  # noqa: E731
    response_ids = fill([e.ids for e in episodes], pad_id)
    token_mask = fill([[1] * len(e.ids) for e in episodes], 0)
    loss_mask = fill([e.is_policy for e in episodes], 0)
    logprobs = torch.tensor([e.logprobs + [0.0] * (width - len(e.logprobs)) for e in episodes], dtype=torch.float32)
    to = lambda t: t.to(device)  # noqa: E731
    return MultiTurnRollout(
        prompt_ids=to(prompt_ids), prompt_mask=to(prompt_mask), response_ids=to(response_ids),
        response_mask=to(loss_mask), logprobs=to(logprobs),
        ended=to(torch.tensor([e.ended for e in episodes])), token_mask=to(token_mask),
        reward=to(torch.tensor([e.reward for e in episodes], dtype=torch.float32)),
        turns=to(torch.tensor([e.turns for e in episodes])), histories=[e.history for e in episodes])


class MultiTurnSampler(Sampler):
    """k episodes of each prompt against `env` (`rollout`), the episode's return as the reward.

    sampling: one policy turn's settings (max_new_tokens per turn); stop_strings end a turn (the
    end of a tool call); prompts are cut from the left to `max_prompt_tokens`. `episode_stats`
    (one episode's history -> {name: value}) adds an environment's own figures, each a mean over
    the episodes (a tool-call rate), to the step's metrics, beside `turns` and `episodes_ended`.
    Each rank's episodes of a step are seeded by (seed, step, rank): a resumed run samples the same."""

    def __init__(self, tokenizer, env: Environment, sampling: SamplingConfig, k: int, seed: int = 0,
                 max_turns: int = 4, stop_strings: Sequence[str] = (), max_prompt_tokens: int | None = None,
                 precision: str = "fp32", episode_stats: Callable[[list], dict] | None = None):
        self.tokenizer, self.env, self.sampling, self.k, self.seed = tokenizer, env, sampling, k, seed
        self.max_turns, self.stop_strings, self.max_prompt_tokens = max_turns, tuple(stop_strings), max_prompt_tokens
        self.precision, self.episode_stats = precision, episode_stats

    def sample(self, policy, prompts: list[Prompt], step: int) -> Sampled:
        device = next(policy.parameters()).device
        generator = torch.Generator(device=device).manual_seed(hashed_row_seeds((self.seed, step), [dist.rank()])[0])
        texts = [p.prompt for p in prompts for _ in range(self.k)]
        record = rollout(policy, self.tokenizer, texts, self.env, self.sampling, self.max_turns, self.stop_strings,
                         generator, lambda: precision_autocast(self.precision, device), self.max_prompt_tokens)
        stats = {"turns": global_mean(record.turns.float()), "episodes_ended": global_mean(record.ended.float())}
        if self.episode_stats is not None:  # each figure a mean over every rank's episodes
            per_episode = [self.episode_stats(history) for history in record.histories]
            stats.update({name: global_mean(torch.tensor([e[name] for e in per_episode], dtype=torch.float64))
                          for name in per_episode[0]})
        responses = ["".join(turn.text for turn in history[1:]) for history in record.histories]
        details = [{"turns": [{"role": t.role, "text": t.text} for t in history]} for history in record.histories]
        return Sampled(record, texts, [p.answer for p in prompts for _ in range(self.k)], responses, record.reward,
                       record.reward, stats=stats, details=details)

    def summary(self) -> dict:
        return {"sampler": "multi-turn", "environment": type(self.env).__name__, "max_turns": self.max_turns}
