"""The one registry of `rlhf ppo --algo`: one record (Algo) per algorithm, which everything reads.

- `PPOConfig.algo` takes its choices from ALGORITHMS (AlgoName) and validates the flags against
  the record (critic, samples, ratio options) in `__post_init__`;
- `rlhf ppo --help` prints `help_text()`: every algorithm with its description and settings;
- `rlhf.train.ppo_options.resolve_options` fills the update's settings from the record where a
  flag is unset (a flag given explicitly wins: `--algo gspo --clip-high 1e-3`);
- `rlhf.train.ppo_update` calls the record's advantage estimator and policy loss by name:
  `rlhf.algos.ADVANTAGE_ESTIMATORS[algo.advantage]`, `rlhf.algos.POLICY_LOSSES[algo.policy_loss]`;
- the tests iterate over ALGORITHMS: each name resolves to a function in `rlhf.algos`, each
  record's resolved options are checked against hand-written values, each algorithm runs a step.
No torch here (the config layer is torch-free): a record names its math, `rlhf.algos` holds it.

What were presets (dapo, dr-grpo, gspo) are records like the others: GRPO's advantages with the
option values their papers use. A record's switches that are what the algorithm is (dapo's
dynamic sampling on, dr-grpo's std division off) always apply; `--dynamic-sampling` and
`--no-grpo-scale-by-std` turn the same switches on any algorithm.

Adding an algorithm:
1. its math, if new, in `rlhf.algos`: an advantage estimator in `estimators.ADVANTAGE_ESTIMATORS`
   (signature there) or a per-token policy loss in `policy_loss.POLICY_LOSSES` (signature there),
   with a test worked out by hand in tests/algos;
2. a new policy loss's one line in POLICY_LOSSES below (what `--help` prints);
3. its record in ALGORITHMS below. Nothing else: the CLI's choices, `--help`, the options, the
   update and the parametrised tests (tests/train/test_ppo_variants.py) follow from the record;
   add its hand-written expected options to that file's EXPECTED_OPTIONS.

Worked example, CISPO (MiniMax-M1, arXiv 2506.13585), one commit touching only this file,
rlhf.algos and the tests:
1. `rlhf.algos.policy_loss.cispo_policy_loss(log_ratio, logp, advantages, mask, clip_low,
   clip_high, dual_clip)` -> (-sg(clip(r, 1 - clip_low, 1 + clip_high)) * A * log pi per token,
   stats), entered as POLICY_LOSSES["cispo"]; tests/algos/test_cispo.py works a 2x3 batch by
   hand (loss, and the gradient -clip(r) * A / N on every real token, the clipped ones included);
2. POLICY_LOSSES["cispo"] below, one line for --help;
3. ALGORITHMS["cispo"] below: advantage="grpo" (its group advantages exist already),
   policy_loss="cispo", k 4, 1 epoch, KL as a loss term, clip_low=1.0 (no lower bound, as the
   paper), clip_high=0.28, token-mean; and its line in EXPECTED_OPTIONS.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

LOSS_AGGREGATIONS: dict[str, str] = {
    "token-mean": "mean over every real token of the batch (long responses weigh more)",
    "seq-mean-token-mean": "mean over sequences of each sequence's token mean (the GRPO paper)",
    "seq-mean-token-sum-norm": "mean over sequences of the token sum / max_new_tokens (Dr. GRPO's unbiased form)",
}

RATIO_LEVELS: dict[str, str] = {
    "token": "pi/pi_old per token (PPO)",
    "sequence": "exp(mean over the sequence of log pi/pi_old), one ratio per sequence (GSPO)",
}

# name of rlhf.algos.POLICY_LOSSES -> one line for --help
POLICY_LOSSES: dict[str, str] = {
    "clipped": "PPO's clipped surrogate -min(r*A, clip(r, 1-clip_low, 1+clip_high)*A), bounded by the dual clip where "
               "A < 0; tokens clipped get no gradient",
    "pg": "the plain policy gradient -A*log pi (on-policy: no ratio, no clip)",
    "cispo": "CISPO's -sg(clip(r, 1-clip_low, 1+clip_high))*A*log pi: the weight is clipped and detached, every "
             "token keeps its gradient",
}


@dataclass(frozen=True)
class Algo:
    """One `--algo`: what tells it apart from the others. Option fields (ratio_level, clip_low,
    clip_high, loss_agg) apply where the flag is unset."""

    description: str  # one line for --help and the README
    advantage: str  # its advantage estimator: a name of rlhf.algos.ADVANTAGE_ESTIMATORS
    policy_loss: str  # its per-token policy loss: a name of POLICY_LOSSES (and rlhf.algos.POLICY_LOSSES)
    default_samples: int  # k, responses per prompt when --num-samples is 0
    default_epochs: int  # passes over each rollout when --update-epochs is 0
    default_kl_in_reward: bool  # --kl-in auto: KL as a per-token reward penalty (True) or as a loss term
    uses_critic: bool = False  # a value model trained beside the policy (the gae estimator reads its values)
    min_samples: int = 1  # a group baseline needs at least 2 samples of each prompt
    ratio_level: str = "token"  # importance ratio per token or per sequence: a name of RATIO_LEVELS
    clip_low: float | None = None  # ratio clipped below at 1 - clip_low; None: --clip
    clip_high: float | None = None  # ratio clipped above at 1 + clip_high; None: the low clip
    loss_agg: str = "token-mean"  # aggregation of the per-token loss: a name of LOSS_AGGREGATIONS
    scale_by_std: bool = True  # the grpo estimator divides by the group's reward std (off: Dr. GRPO)
    dynamic_sampling: bool = False  # DAPO: keep the groups whose rewards differ, sample more to fill the batch

    def __post_init__(self):
        for value, names in ((self.policy_loss, POLICY_LOSSES), (self.ratio_level, RATIO_LEVELS),
                             (self.loss_agg, LOSS_AGGREGATIONS)):
            if value not in names:
                raise ValueError(f"unknown {value!r}; one of {', '.join(names)}")

    @property
    def uses_ratio(self) -> bool:
        """Whether its policy loss reads the importance ratio (and so its level and clips)."""
        return self.policy_loss != "pg"


ALGORITHMS: dict[str, Algo] = {
    "ppo": Algo("critic + GAE on the per-token reward -beta*KL_t + score at the last token (Schulman et al. 2017)",
                advantage="gae", policy_loss="clipped", default_samples=1, default_epochs=4,
                default_kl_in_reward=True, uses_critic=True),
    "rloo": Algo("sequence reward minus the mean of the prompt's other k-1 samples (Ahmadian et al. 2024)",
                 advantage="rloo", policy_loss="clipped", default_samples=4, default_epochs=1,
                 default_kl_in_reward=True, min_samples=2),
    "grpo": Algo("sequence reward minus the group mean, divided by the group std (Shao et al. 2024)",
                 advantage="grpo", policy_loss="clipped", default_samples=4, default_epochs=1,
                 default_kl_in_reward=False, min_samples=2),
    "reinforce": Algo("plain policy gradient, sequence reward minus the batch mean (Williams 1992)",
                      advantage="reinforce", policy_loss="pg", default_samples=1, default_epochs=1,
                      default_kl_in_reward=True),
    "reinforce++": Algo("KL in the per-token reward, return-to-go normalised over the whole batch, no baseline "
                        "(Hu 2025)", advantage="reinforce++", policy_loss="clipped", default_samples=1,
                        default_epochs=1, default_kl_in_reward=True),
    "reinforce++-baseline": Algo("score minus its group mean, then return-to-go normalised over the whole batch "
                                 "(Hu 2025); KL as a loss term", advantage="reinforce++-baseline",
                                 policy_loss="clipped", default_samples=4, default_epochs=1,
                                 default_kl_in_reward=False, min_samples=2),
    "dapo": Algo("DAPO (Yu et al. 2025): GRPO with clip-higher (0.2, 0.28), token-mean loss, dynamic sampling; add "
                 "--overlong-buffer N for its soft overlong penalty and --kl-coef 0 to drop the KL as it does",
                 advantage="grpo", policy_loss="clipped", default_samples=4, default_epochs=1,
                 default_kl_in_reward=False, min_samples=2, clip_low=0.2, clip_high=0.28, loss_agg="token-mean",
                 dynamic_sampling=True),
    "dr-grpo": Algo("Dr. GRPO (Liu et al. 2025): GRPO without the std division, token sums over the constant "
                    "max_new_tokens", advantage="grpo", policy_loss="clipped", default_samples=4, default_epochs=1,
                    default_kl_in_reward=False, min_samples=2, scale_by_std=False,
                    loss_agg="seq-mean-token-sum-norm"),
    "gspo": Algo("GSPO (Zheng et al. 2025): sequence-level ratio exp(mean log ratio), clipped to [1-3e-4, 1+4e-4], "
                 "mean over sequences", advantage="grpo", policy_loss="clipped", default_samples=4,
                 default_epochs=1, default_kl_in_reward=False, min_samples=2, ratio_level="sequence",
                 clip_low=3e-4, clip_high=4e-4, loss_agg="seq-mean-token-mean"),
    "cispo": Algo("CISPO (MiniMax-M1, 2025): GRPO's advantages; the importance weight clipped and detached, not the "
                  "update, so every token keeps its gradient; no lower bound (clip_low 1), clip_high 0.28",
                  advantage="grpo", policy_loss="cispo", default_samples=4, default_epochs=1,
                  default_kl_in_reward=False, min_samples=2, clip_low=1.0, clip_high=0.28, loss_agg="token-mean"),
}

ALGORITHM_NAMES: tuple[str, ...] = tuple(ALGORITHMS)
AlgoName = Literal[ALGORITHM_NAMES]  # type: ignore[valid-type]  # choices of --algo, from the registry
LossAggName = Literal[tuple(LOSS_AGGREGATIONS)]  # type: ignore[valid-type]
RatioLevelName = Literal[tuple(RATIO_LEVELS)]  # type: ignore[valid-type]


def settings_text(algo: Algo) -> str:
    """The record's settings in one line: its math by name, k, epochs, KL placement, and each
    option it sets away from the defaults."""
    kl = "reward" if algo.default_kl_in_reward else "loss"
    parts = [f"advantage={algo.advantage}", f"loss={algo.policy_loss}", f"k={algo.default_samples}",
             f"epochs={algo.default_epochs}", f"kl_in={kl}"] + (["critic"] if algo.uses_critic else [])
    skip = {"description", "advantage", "policy_loss", "default_samples", "default_epochs", "default_kl_in_reward",
            "uses_critic", "min_samples"}
    parts += [f"{f.name}={getattr(algo, f.name)}" for f in fields(algo)
              if f.name not in skip and getattr(algo, f.name) != f.default]
    return ", ".join(parts)


def help_text() -> str:
    """Every algorithm and option value with its one line: what `rlhf ppo --help` prints."""
    lines = ["algorithms (--algo):"]
    lines += [f"  {name}: {algo.description} [{settings_text(algo)}]" for name, algo in ALGORITHMS.items()]
    for title, table in (("policy loss (set by --algo)", POLICY_LOSSES), ("loss aggregation (--loss-agg)",
                         LOSS_AGGREGATIONS), ("importance ratio (--ratio-level)", RATIO_LEVELS)):
        lines += ["", f"{title}:"] + [f"  {name}: {text}" for name, text in table.items()]
    return "\n".join(lines)
