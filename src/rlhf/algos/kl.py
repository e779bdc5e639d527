"""Per-token KL estimators and KL-coefficient controllers.

Estimators of KL(pi || ref) from tokens sampled from pi, after J. Schulman, "Approximating KL
divergence" (2020, http://joschu.net/blog/kl-approx.html). With logr = ref_logp - logp:
    k1 = -logr                unbiased, high variance, can be negative per token
    k2 = logr**2 / 2          biased, low variance, >= 0
    k3 = exp(logr) - 1 - logr unbiased, low variance, >= 0
"""

import math
from typing import Callable, Union

import torch
from torch import Tensor


def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = logp - ref_logp.

    logp, ref_logp: (B, T) log-probs of the sampled tokens. Returns (B, T).
    """
    return logp - ref_logp


def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = (logp - ref_logp)**2 / 2. Shapes (B, T) -> (B, T)."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = exp(ref_logp - logp) - 1 - (ref_logp - logp). (B, T) -> (B, T), never negative."""
    log_ratio = ref_logp - logp
    # expm1 keeps the small-difference case accurate; the clamp removes rounding below zero.
    return (torch.expm1(log_ratio) - log_ratio).clamp(min=0)


KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "k1": kl_k1,
    "k2": kl_k2,
    "k3": kl_k3,
}


def kl_estimate(logp: Tensor, ref_logp: Tensor, kind: str) -> Tensor:
    """Per-token estimate of KL(pi || ref) by the estimator ``kind`` ("k1", "k2" or "k3").

    logp, ref_logp: (B, T), log pi and log ref at tokens sampled from pi. Returns (B, T).
    """
    try:
        estimator = KL_ESTIMATORS[kind]
    except KeyError:
        known = sorted(KL_ESTIMATORS)
        raise ValueError(f"unknown KL estimator {kind!r}; choose one of {known}") from None
    return estimator(logp, ref_logp)


def _as_float(x: Union[float, Tensor]) -> float:
    return float(x.item()) if isinstance(x, Tensor) else float(x)


class AdaptiveKLController:
    """The adaptive KL coefficient of Ziegler et al. 2019 ("Fine-Tuning Language Models from
    Human Preferences", sec. 2.2), a proportional controller towards a target KL:

        error = clip(current_kl / target - 1, -0.2, 0.2)
        value *= 1 + error * n_steps / horizon

    The coefficient always stays finite and positive: a non-finite KL measurement (a NaN from
    one broken batch) is ignored, and a move that would take the value to zero or below (when
    n_steps exceeds the horizon) or past the float range is not taken.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be positive, got {target}, {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: Union[float, Tensor], n_steps: int) -> float:
        """Move the coefficient after ``n_steps`` samples (or steps) with measured ``current_kl``.
        Returns the new value."""
        current_kl = _as_float(current_kl)
        if not math.isfinite(current_kl):
            return self.value
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        proposed = self.value * (1.0 + error * n_steps / self.horizon)
        if math.isfinite(proposed) and proposed > 0:
            self.value = proposed
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = float(state["horizon"])


class FixedKLController:
    """A constant KL coefficient with the interface of ``AdaptiveKLController``."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: Union[float, Tensor], n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
