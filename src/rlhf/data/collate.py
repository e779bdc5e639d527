"""Padding and packing of tokenized examples into batches of tensors."""

from __future__ import annotations

from typing import Sequence

import torch

from .tokenize import TokenizedExample


def pad_right(sequences: Sequence[Sequence[int]], value: int, multiple_of: int = 1) -> torch.Tensor:
    """(B, T) tensor of right-padded sequences; T rounded up to `multiple_of`."""
    length = max(len(s) for s in sequences)
    length = -(-length // multiple_of) * multiple_of
    out = torch.full((len(sequences), length), value, dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def pad_left(sequences: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """(B, T) tensor of left-padded sequences (prompts for generation)."""
    length = max(len(s) for s in sequences)
    out = torch.full((len(sequences), length), value, dtype=torch.long)
    for i, s in enumerate(sequences):
        if len(s):
            out[i, length - len(s):] = torch.as_tensor(s, dtype=torch.long)
    return out


def collate_completions(examples: Sequence[TokenizedExample], pad_id: int, multiple_of: int = 8) -> dict:
    """Right-padded batch: input_ids, attention_mask, loss_mask, all (B, T)."""
    ids = pad_right([e.input_ids for e in examples], pad_id, multiple_of)
    return {
        "input_ids": ids,
        "attention_mask": pad_right([[1] * len(e.input_ids) for e in examples], 0, multiple_of),
        "loss_mask": pad_right([e.loss_mask for e in examples], 0, multiple_of),
    }


def pack_completions(examples: Sequence[TokenizedExample], max_length: int) -> list[dict]:
    """Greedily pack examples into rows of at most `max_length` tokens, without cross-attention.

    Each packed row carries `position_ids` that restart at 0 for every example; with a
    flash-attention kernel (or the padding-free path of transformers) those positions
    separate the examples, so packing changes nothing but the amount of padding.
    Returns one dict per packed row: input_ids, loss_mask, position_ids (lists).
    """
    rows: list[dict] = []
    current = {"input_ids": [], "loss_mask": [], "position_ids": []}
    for e in examples:
        if current["input_ids"] and len(current["input_ids"]) + len(e.input_ids) > max_length:
            rows.append(current)
            current = {"input_ids": [], "loss_mask": [], "position_ids": []}
        current["input_ids"] += e.input_ids
        current["loss_mask"] += e.loss_mask
        current["position_ids"] += list(range(len(e.input_ids)))
    if current["input_ids"]:
        rows.append(current)
    return rows
