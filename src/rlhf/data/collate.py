"""Padding and packing of tokenized examples into batches of tensors."""

from __future__ import annotations

from typing import Sequence

import torch

from .tokenize import RewardExample, TokenizedExample, TokenizedPair


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


def collate_pairs(pairs: Sequence[TokenizedPair], pad_id: int, multiple_of: int = 8) -> dict:
    """Chosen and rejected responses of B comparisons in one right-padded batch of 2B rows, so one
    forward pass scores both: rows 0..B-1 are the chosen, rows B..2B-1 the rejected, in order.
    Returns input_ids, attention_mask, loss_mask, all (2B, T)."""
    return collate_completions([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id, multiple_of)


def collate_rewards(examples: Sequence[RewardExample], pad_id: int, multiple_of: int = 8) -> dict:
    """Right-padded batch of reward-model inputs: input_ids, attention_mask and, for encoder
    ("pair") inputs, token_type_ids, all (N, T)."""
    batch = {
        "input_ids": pad_right([e.input_ids for e in examples], pad_id, multiple_of),
        "attention_mask": pad_right([[1] * len(e.input_ids) for e in examples], 0, multiple_of),
    }
    if examples[0].token_type_ids is not None:
        batch["token_type_ids"] = pad_right([e.token_type_ids for e in examples], 0, multiple_of)
    return batch


def pack_rewards(examples: Sequence[RewardExample], max_length: int, pad_id: int) -> dict:
    """Padding-free reward batch for causal LMs: the sequences packed into rows of at most
    `max_length` tokens (first-fit decreasing: longest first, each into the first row with room),
    position ids restarting at 0 for each sequence (transformers turns them into a block-diagonal
    causal mask, so no sequence sees another).

    Returns input_ids and position_ids (R, L), and `score_rows`, `score_cols` (N,): where each of
    the N sequences, in input order, is scored: its last token that is not `pad_id`, as a
    `*ForSequenceClassification` model pools a right-padded batch.
    """
    rows: list[list[int]] = []
    positions: list[list[int]] = []
    score_at: list[tuple[int, int]] = [(0, 0)] * len(examples)
    for i in sorted(range(len(examples)), key=lambda j: -len(examples[j].input_ids)):
        ids = examples[i].input_ids
        row = next((r for r, used in enumerate(rows) if len(used) + len(ids) <= max_length), len(rows))
        if row == len(rows):
            rows.append([])
            positions.append([])
        real = [k for k, t in enumerate(ids) if t != pad_id]
        score_at[i] = (row, len(rows[row]) + (real[-1] if real else 0))
        rows[row].extend(ids)
        positions[row].extend(range(len(ids)))
    ids = pad_right(rows, pad_id, 8)
    # Padding continues as its own pseudo-sequence (positions from 0), as in SFT packing.
    position_ids = pad_right([p + list(range(ids.shape[1] - len(p))) for p in positions], 0)
    return {"input_ids": ids, "position_ids": position_ids,
            "score_rows": torch.tensor([r for r, _ in score_at]), "score_cols": torch.tensor([c for _, c in score_at])}
