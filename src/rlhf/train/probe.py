"""Linear probing of a reward model's value head before fine-tuning (LP-FT).

A new value head is random, so the first steps of fine-tuning push gradients from a meaningless
score back into a pretrained body and distort the features it came with. Fitting the head alone
on frozen features first, then fine-tuning everything from there (Kumar et al. 2022, "Fine-Tuning
can Distort Pretrained Features and Underperform Out-of-Distribution"), keeps more of what the
backbone knew; it is also how WARM (Ramé et al. 2024) starts the reward models it averages.

The probe is the same preference loss as training (Bradley-Terry with the row's margin on pairs,
Plackett-Luce on rankings) on rewards w·f of the frozen head inputs f, plus an L2 penalty on w
(a bias cannot change a preference loss, so it is set to 0). The problem is convex, so L-BFGS from zero gives one answer whatever the seed.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch

from ..models.reward import sequence_rewards


def reward_head(model) -> torch.nn.Linear:
    """The last `nn.Linear` with one output: the layer that turns features into the reward
    (`classifier` of BERT, `classifier.out_proj` of RoBERTa, `score` of Llama and GPT-2)."""
    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1]
    if not heads:
        raise ValueError(f"{type(model).__name__} has no linear layer with one output to probe")
    return heads[-1]


def _pooled(features: torch.Tensor, batch: dict, pad_id: int) -> torch.Tensor:
    """(N, H) head inputs of the scored positions: already pooled (2-D), or per position (N, T, H)
    read at the last token that is not padding, as a sequence classifier pools a padded batch."""
    if features.dim() == 2:
        return features
    real = batch["input_ids"] != pad_id  # (N, T)
    last = (torch.arange(real.shape[1], device=real.device) * real).argmax(-1)
    return features[torch.arange(features.shape[0], device=features.device), last]


@torch.no_grad()
def head_features(model, batch: dict, pad_id: int, autocast=None) -> torch.Tensor:
    """(N, H) float32 inputs of the reward head for the N sequences of `batch`."""
    captured = []
    hook = reward_head(model).register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        with autocast or contextlib.nullcontext():
            sequence_rewards(model, batch)
    finally:
        hook.remove()
    return _pooled(captured[-1], batch, pad_id).float()


def fit_linear_probe(
    model,
    batches: Sequence[dict],
    loss_from_rewards: Callable[[torch.Tensor, dict], tuple[torch.Tensor, dict]],
    pad_id: int,
    l2: float,
    autocast=None,
    max_iter: int = 200,
    progress: bool = False,
) -> dict:
    """Set the reward head to the preference-loss minimiser on frozen features; returns stats.

    `batches` cover the training preferences once (each with `n_units` preferences);
    `loss_from_rewards(rewards (N,), batch) -> (loss summed over the batch's preferences, stats)`
    is the training loss. Minimises mean loss + l2 * ||w||^2 over w; the bias cannot change a
    preference loss (every reward shifts with it), so it is set to 0. `progress` shows a bar over
    the frozen forward passes, which take minutes on a large preference file.
    """
    from tqdm.auto import tqdm

    head = reward_head(model)
    was_training = model.training
    model.eval()
    features = [head_features(model, b, pad_id, autocast)
                for b in tqdm(batches, desc="probe features", disable=not progress, dynamic_ncols=True)]
    model.train(was_training)
    all_features, index = torch.cat(features), _merged_index(batches, [len(f) for f in features])
    weight = torch.zeros(head.in_features, device=all_features.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        return loss_from_rewards(all_features @ weight, index)[0] / index["n_units"] + l2 * weight.square().sum()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    before = float(objective().detach())
    optimizer.step(closure)
    with torch.no_grad():
        after = float(objective())
        head.weight.copy_(weight.to(head.weight.dtype).view_as(head.weight))
        if head.bias is not None:
            head.bias.zero_()
        accuracy = loss_from_rewards(all_features @ weight, index)[1]["accuracy"]
    return {"probe_loss_before": before, "probe_loss": after, "probe_train_accuracy": accuracy}


def _merged_index(batches: Sequence[dict], sizes: Sequence[int]) -> dict:
    """The pair and ranking indices of `batches` as one batch over their concatenated sequences."""
    offsets = torch.tensor([0, *sizes]).cumsum(0)[:-1].tolist()
    merged = {"n_units": sum(b["n_units"] for b in batches)}
    for key in {k for b in batches for k in b if k.startswith("ranked_")} | {"pair_index"}:
        parts = [b[key] + offset for b, offset in zip(batches, offsets) if key in b]
        merged[key] = torch.cat(parts)
    merged["pair_margin"] = torch.cat([b["pair_margin"] for b in batches])
    return merged
