"""Continuous batching: a decode batch that admits new sequences between steps and retires
finished ones, over one shared KV cache (what `rlhf serve` runs; nothing in it is server-specific).

`generate` (rlhf.rollout.generate) decodes a fixed batch until every row has stopped. Here rows
come and go: new prompts are prefilled together (left-padded, as `generate` does) and their
cache is left-padded to the running batch's length (or the batch's to theirs) and concatenated
along the batch; a finished row is dropped with `index_select`, and columns that have become
padding in every row are cut. Position ids count real tokens only (`_position_ids`), so a row
sees the positions it would see alone, whatever its neighbours.

Each row samples with its own temperature, top-p and `torch.Generator`: a seeded row draws the
same tokens whichever rows share its batch.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..data.collate import pad_left
from .generate import _position_ids


def sample_rows(logits: Tensor, temperature: Tensor, top_p: Tensor, generators: Sequence[torch.Generator | None]) -> Tensor:
    """One token per row, each with its own settings.

    logits: (B, V); temperature, top_p: (B,) (temperature 0 = greedy); generators: B generators
    (None: the global RNG). Returns (B,) int64. Nucleus filtering as in `generate._filter_logits`;
    the draw inverts the CDF with one uniform number per row, as `generate._draw` does.
    """
    logits = logits.float()
    greedy = logits.argmax(-1)
    if bool((temperature == 0).all()):
        return greedy
    probs = (logits / temperature.clamp(min=1e-6)[:, None]).softmax(-1)
    nucleus = (top_p < 1).nonzero().squeeze(-1).tolist()
    if nucleus:  # sort only the rows that need it: a sort over the vocabulary costs more than the model step
        sorted_probs, order = torch.sort(probs[nucleus], dim=-1, descending=True)
        # drop a token when the tokens before it already hold top_p; the first is always kept
        drop_sorted = (sorted_probs.cumsum(-1) - sorted_probs) >= top_p[nucleus][:, None]
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs[nucleus] = probs[nucleus].masked_fill(drop, 0.0)
    cdf = probs.cumsum(-1)
    u = torch.cat([torch.rand(1, generator=g, device=logits.device) for g in generators])[:, None] * cdf[:, -1:]
    # the first index whose cumulative probability exceeds u; zero-probability tokens never are
    drawn = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=logits.shape[-1] - 1)
    return torch.where(temperature == 0, greedy, drawn)


class DecodeBatch:
    """The running rows of one model: their KV cache, attention mask and pending tokens.

    Row i's next forward input is `pending[i]` (the token it sampled last, not yet in the cache).
    `admit` prefills new prompts and returns their first-token logits; `step` feeds every row's
    pending token and returns next-token logits; `retire` drops rows. Not thread-safe: one
    worker owns a batch.
    """

    def __init__(self, model, pad_token_id: int):
        self.model = model
        self.pad_token_id = pad_token_id
        self.device = next(model.parameters()).device
        self.cache = None  # DynamicCache over (B, H, L, D) keys and values
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)  # (B, L) 1 on real cached tokens
        self.pending = torch.zeros(0, dtype=torch.long, device=self.device)  # (B,) next input token

    @property
    def size(self) -> int:
        return self.mask.shape[0]

    @torch.no_grad()
    def admit(self, prompt_ids: Sequence[Sequence[int]]) -> Tensor:
        """Prefill `prompt_ids` (b lists of ids) and append them as the last b rows.
        Returns their next-token logits (b, V); set their pending tokens with `set_pending`."""
        from transformers import DynamicCache

        prompts = pad_left(prompt_ids, self.pad_token_id).to(self.device)
        mask = pad_left([[1] * len(p) for p in prompt_ids], 0).to(self.device)
        cache = DynamicCache()
        out = self.model(input_ids=prompts, attention_mask=mask, position_ids=_position_ids(mask),
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1].float()
        if self.cache is None or self.size == 0:
            self.cache, self.mask = out.past_key_values, mask
        else:
            self._merge(out.past_key_values, mask)
        self.pending = torch.cat([self.pending, torch.full((len(prompt_ids),), self.pad_token_id,
                                                           dtype=torch.long, device=self.device)])
        return logits

    def set_pending(self, rows: Sequence[int] | slice, tokens: Tensor) -> None:
        self.pending[rows] = tokens

    def _merge(self, cache, mask: Tensor) -> None:
        length = max(self.mask.shape[1], mask.shape[1])

        def left_pad(t: Tensor, n: int) -> Tensor:  # pad dim -2 (time) of a (B, H, L, D) tensor with n zeros
            return torch.cat([t.new_zeros(*t.shape[:-2], n, t.shape[-1]), t], dim=-2) if n else t

        grow_old, grow_new = length - self.mask.shape[1], length - mask.shape[1]
        for old, new in zip(self.cache.layers, cache.layers):
            old.keys = torch.cat([left_pad(old.keys, grow_old), left_pad(new.keys, grow_new)])
            old.values = torch.cat([left_pad(old.values, grow_old), left_pad(new.values, grow_new)])
        self.mask = torch.cat([pad_left_mask(self.mask, length), pad_left_mask(mask, length)])

    @torch.no_grad()
    def step(self) -> Tensor:
        """Feed every row's pending token; returns next-token logits (B, V)."""
        positions = self.mask.sum(-1, keepdim=True)  # (B, 1): real tokens so far = next position
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.size, 1)], dim=1)
        out = self.model(input_ids=self.pending[:, None], attention_mask=self.mask, position_ids=positions,
                         past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.cache = out.past_key_values
        return out.logits[:, -1].float()

    def retire(self, rows: Sequence[int]) -> None:
        """Drop `rows`; then cut leading columns that are padding in every remaining row."""
        if not rows:
            return
        keep = torch.tensor([i for i in range(self.size) if i not in set(rows)], dtype=torch.long, device=self.device)
        self.mask, self.pending = self.mask[keep], self.pending[keep]
        cut = int((self.mask.cumsum(-1) == 0).all(0).sum()) if self.size else self.mask.shape[1]
        for layer in self.cache.layers:
            layer.keys = layer.keys[keep][:, :, cut:]
            layer.values = layer.values[keep][:, :, cut:]
        self.mask = self.mask[:, cut:]
        if self.size == 0:
            self.cache = None


def pad_left_mask(mask: Tensor, length: int) -> Tensor:
    """(B, L) mask left-padded with zeros to (B, length)."""
    return torch.cat([mask.new_zeros(mask.shape[0], length - mask.shape[1]), mask], dim=1)
