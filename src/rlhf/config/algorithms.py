"""The one registry of `rlhf ppo`'s algorithms and policy-loss options.

`PPOConfig` validates `--algo`, `--loss-agg` and `--ratio-level` against these dicts, `--help`
lists them (from `help_text`), `rlhf.train.ppo_update` maps each estimator to its advantage
function, and the tests iterate over them: a name added here is checked everywhere at once.
No torch here (the config layer is torch-free); the math lives in `rlhf.algos`.

An algorithm is either an advantage *estimator* (ppo, rloo, grpo, reinforce, reinforce++,
reinforce++-baseline) or a named *preset*: an estimator plus the option values a paper uses
(dapo, dr-grpo, gspo). A preset's values fill the options left unset (None), so a flag given
explicitly wins over the preset (`--algo gspo --clip-high 1e-3`); its switches (dapo's dynamic
sampling on, dr-grpo's std division off) are what the preset is and always apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Mapping


@dataclass(frozen=True)
class Estimator:
    """An advantage estimator and its defaults."""

    description: str  # one line for --help and the README
    uses_critic: bool  # a value model trained beside the policy (GAE)
    clipped: bool  # PPO's clipped surrogate; else the plain policy gradient
    default_samples: int  # k, responses per prompt when --num-samples is 0
    default_epochs: int  # passes over each rollout when --update-epochs is 0
    default_kl_in_reward: bool  # KL as a per-token reward penalty, else as a loss term
    min_samples: int = 1  # a group baseline needs at least 2 samples of each prompt


@dataclass(frozen=True)
class Preset:
    """A named recipe: an estimator plus the options it sets (applied where the flag is unset)."""

    estimator: str
    description: str
    options: Mapping[str, object] = field(default_factory=dict)


ESTIMATORS: dict[str, Estimator] = {
    "ppo": Estimator("critic + GAE on the per-token reward -beta*KL_t + score at the last token", uses_critic=True,
                     clipped=True, default_samples=1, default_epochs=4, default_kl_in_reward=True),
    "rloo": Estimator("sequence reward minus the mean of the prompt's other k-1 samples (Ahmadian et al. 2024)",
                      uses_critic=False, clipped=True, default_samples=4, default_epochs=1,
                      default_kl_in_reward=True, min_samples=2),
    "grpo": Estimator("sequence reward minus the group mean, divided by the group std (Shao et al. 2024)",
                      uses_critic=False, clipped=True, default_samples=4, default_epochs=1,
                      default_kl_in_reward=False, min_samples=2),
    "reinforce": Estimator("plain policy gradient, sequence reward minus the batch mean (Williams 1992)",
                           uses_critic=False, clipped=False, default_samples=1, default_epochs=1,
                           default_kl_in_reward=True),
    "reinforce++": Estimator("KL in the per-token reward, return-to-go normalised over the whole batch, no "
                             "baseline (Hu 2025)", uses_critic=False, clipped=True, default_samples=1,
                             default_epochs=1, default_kl_in_reward=True),
    "reinforce++-baseline": Estimator("score minus its group mean, then return-to-go normalised over the whole "
                                      "batch (Hu 2025); KL as a loss term", uses_critic=False, clipped=True,
                                      default_samples=4, default_epochs=1, default_kl_in_reward=False,
                                      min_samples=2),
}

PRESETS: dict[str, Preset] = {
    "dapo": Preset("grpo", "DAPO (Yu et al. 2025): clip-higher (0.2, 0.28), token-mean loss, dynamic sampling; "
                   "add --overlong-buffer N for its soft overlong penalty and --kl-coef 0 to drop the KL as it does",
                   MappingProxyType({"clip_low": 0.2, "clip_high": 0.28, "loss_agg": "token-mean",
                                     "dynamic_sampling": True})),
    "dr-grpo": Preset("grpo", "Dr. GRPO (Liu et al. 2025): no std division, token sums over the constant "
                      "max_new_tokens", MappingProxyType({"grpo_scale_by_std": False,
                                                          "loss_agg": "seq-mean-token-sum-norm"})),
    "gspo": Preset("grpo", "GSPO (Zheng et al. 2025): sequence-level ratio exp(mean log ratio), clipped to "
                   "[1-3e-4, 1+4e-4], mean over sequences", MappingProxyType({
                       "ratio_level": "sequence", "clip_low": 3e-4, "clip_high": 4e-4,
                       "loss_agg": "seq-mean-token-mean"})),
}

LOSS_AGGREGATIONS: dict[str, str] = {
    "token-mean": "mean over every real token of the batch (long responses weigh more)",
    "seq-mean-token-mean": "mean over sequences of each sequence's token mean (the GRPO paper)",
    "seq-mean-token-sum-norm": "mean over sequences of the token sum / max_new_tokens (Dr. GRPO's unbiased form)",
}

RATIO_LEVELS: dict[str, str] = {
    "token": "pi/pi_old per token (PPO)",
    "sequence": "exp(mean over the sequence of log pi/pi_old), one ratio per sequence (GSPO)",
}

ALGORITHM_NAMES: tuple[str, ...] = (*ESTIMATORS, *PRESETS)
AlgoName = Literal[ALGORITHM_NAMES]  # type: ignore[valid-type]  # choices of --algo, from the registry
LossAggName = Literal[tuple(LOSS_AGGREGATIONS)]  # type: ignore[valid-type]
RatioLevelName = Literal[tuple(RATIO_LEVELS)]  # type: ignore[valid-type]


def estimator_of(algo: str) -> str:
    """The advantage estimator behind `algo` (itself, or a preset's)."""
    if algo in PRESETS:
        return PRESETS[algo].estimator
    if algo in ESTIMATORS:
        return algo
    raise ValueError(f"unknown algorithm {algo!r}; one of {', '.join(ALGORITHM_NAMES)}")


def preset_options(algo: str) -> Mapping[str, object]:
    """The option values `algo` sets (empty for a plain estimator)."""
    return PRESETS[algo].options if algo in PRESETS else {}


def help_text() -> str:
    """Every algorithm, preset and option value with its one line: what `rlhf ppo --help` prints."""
    lines = ["algorithms:"]
    lines += [f"  {name}: {spec.description}" for name, spec in ESTIMATORS.items()]
    for name, preset in PRESETS.items():
        sets = ", ".join(f"{k}={v}" for k, v in preset.options.items())
        lines.append(f"  {name}: {preset.description} [= {preset.estimator} with {sets}]")
    lines += ["", "loss aggregation (--loss-agg):"]
    lines += [f"  {name}: {text}" for name, text in LOSS_AGGREGATIONS.items()]
    lines += ["", "importance ratio (--ratio-level):"]
    lines += [f"  {name}: {text}" for name, text in RATIO_LEVELS.items()]
    return "\n".join(lines)
