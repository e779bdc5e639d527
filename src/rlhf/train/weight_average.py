"""Tail averaging of one run's weights (Polyak-Ruppert averaging; SWA, Izmailov et al. 2018):
the uniform mean of the weights after each of the run's last optimiser steps.

A reward model fine-tuned on a few thousand noisy labels ends at one point of a noisy path;
the mean of the points along the end of that path is a one-run cousin of WARM's average of
several runs (Ramé et al. 2024), for the price of one copy of the trainable weights and one
add per step. `--average-tail F` averages the states after the last round(F * steps) steps
(at least one): F = 0 keeps the last weights, F = 1 averages every step's.

The mean is a state holder (`state_dict` / `load_state_dict`), saved in each checkpoint, so a
resumed run averages exactly the states an uninterrupted one does.
"""

from __future__ import annotations

import torch


def tail_start(total_steps: int, fraction: float) -> int:
    """The first step (1-based, counted after its update) whose weights enter the mean of the
    last `fraction` of `total_steps`: the last round(fraction * total_steps) steps, at least one."""
    averaged = max(1, round(fraction * total_steps))
    return total_steps - min(averaged, total_steps) + 1


class TailAverage:
    """The running uniform mean of the trainable parameters of `model` over the steps
    `first_step`..end; `update(model, step)` after each optimiser step, `apply(model)` at the end."""

    def __init__(self, first_step: int):
        self.first_step = first_step
        self.count = 0
        self.mean: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Add the weights held after optimiser step `step` (1-based) if it is in the tail."""
        if step < self.first_step:
            return
        self.count += 1
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            if name not in self.mean:  # the first state of the tail is the mean of one
                self.mean[name] = param.detach().float().clone()
            else:  # mean_n = mean_{n-1} + (w_n - mean_{n-1}) / n: no sum that grows with n
                self.mean[name].add_(param.detach().float() - self.mean[name], alpha=1.0 / self.count)

    @torch.no_grad()
    def apply(self, model: torch.nn.Module) -> None:
        """Load the mean into `model`'s trainable parameters (nothing when no step was averaged)."""
        for name, param in model.named_parameters():
            if name in self.mean:
                param.copy_(self.mean[name].to(param.dtype))

    def state_dict(self) -> dict:
        return {"first_step": self.first_step, "count": self.count, "mean": dict(self.mean)}

    def load_state_dict(self, state: dict) -> None:
        if state["first_step"] != self.first_step:
            raise ValueError(f"the checkpoint averages from step {state['first_step']}, this run from {self.first_step}")
        self.count, self.mean = state["count"], {k: v.clone() for k, v in state["mean"].items()}
