"""Config of `rlhf iterate`: the next round of the loop from the feedback collected since the last one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import tyro

from .base import check_fields
from .feedback import DEFAULT_DB

METHODS = ("rm+ppo", "dpo")  # rm+ppo: warm-started reward model, then online RL against it; dpo: direct alignment


@dataclass(frozen=True)
class IterateConfig:
    """`rlhf iterate --from RUN_DIR --project NAME`: one round of deploy, collect, retrain. Exports
    the labels the store got since the last round of NAME (projects NAME, the labelling app's, and
    NAME-pairs, the chat page's regenerate and arena votes; people's and imported judge labels
    alike), trains the next policy from the current one (rm+ppo: the reward model warm-started on
    the new pairs, then PPO/RLOO/GRPO against it; dpo: DPO on the new pairs), evaluates it against
    the current policy by a judge independent of the new labels (--judge, the gold scorer the
    current round names, or the labels --holdout kept out of training), and records the lineage
    in OUT/lineage.json and in the store. Every stage is an ordinary run directory inside --out;
    deploy with `rlhf serve --model OUT/policy`."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("from_run", "project")

    from_run: Annotated[str | None, tyro.conf.arg(name="from")] = None  # the current round: an `rlhf iterate` round, an `rlhf demo` directory (its sft/ and rm/), or a stage run with model/
    project: str | None = None  # store project NAME: labels of NAME and NAME-pairs are exported; rounds are recorded under NAME
    db: str = DEFAULT_DB  # feedback store: a SQLite file path or URL, or postgresql+psycopg://user:pw@host/db
    out: str = "runs/iterate"  # the new round's directory: data/, the stage runs, policy/, eval.json, lineage.json
    method: Literal["rm+ppo", "dpo"] = "rm+ppo"  # rm+ppo: warm-start the reward model on the new pairs, then RL; dpo: DPO on the new pairs
    rule: Literal["majority", "every"] = "majority"  # how several annotators' labels of one task combine (as `rlhf label export --rule`)
    drop_ties: bool = False  # majority: leave tie and both-bad votes out of the count instead of counting them against a winner
    min_gold_accuracy: float = 0.0  # leave out annotators whose accuracy on gold items is below this
    min_pairs: int = 1  # refuse a round with fewer new comparisons than this
    policy: str | None = None  # the policy to train from; default: the current round's (iterate: policy/, demo: sft/model, run: model/)
    reward_model: str | None = None  # rm+ppo: the reward model to warm-start; default: the current round's (iterate or demo: rm/model)
    prompts: str | None = None  # rm+ppo: prompts for RL; default: the prompts of the exported comparisons
    eval_data: str | None = None  # held-out prompts for the evaluation; default: the current round's (iterate: its eval data, demo: data/prompts-eval.jsonl)
    judge: str | None = None  # scorer of the win rate against the current policy (reward-model dir or module:function, e.g. an AI judge's); default: the gold scorer the current round names (the demo's oracle), else held-out labels (--holdout); never the reward model trained on the same labels
    holdout: float = 0.2  # with no --judge and no gold: share of the new comparisons (whole prompts) kept out of training to judge the new policy by; 0 = require a judge
    algo: Literal["ppo", "rloo", "grpo", "reinforce"] = "ppo"  # rm+ppo: the online RL algorithm
    rm_epochs: float = 1.0  # reward model: passes over the new comparisons
    rm_lr: float = 3e-5  # reward model: peak learning rate (a warm start wants small steps)
    rm_batch_size: int = 16  # reward model: comparisons per micro-batch (at most: fewer new comparisons train in one batch of all)
    rl_steps: int = 20  # rm+ppo: rollout steps
    rl_batch_size: int = 16  # rm+ppo: prompts per rollout step
    num_samples: int = 0  # rm+ppo: responses per prompt; 0 = the algorithm's default (ppo 1, rloo/grpo 4)
    rl_lr: float = 5e-5  # rm+ppo: policy learning rate
    kl_coef: float = 0.05  # rm+ppo: weight of the KL to the current policy
    dpo_beta: float = 0.1  # dpo: KL strength beta
    dpo_lr: float = 5e-5  # dpo: peak learning rate
    dpo_epochs: float = 1.0  # dpo: passes over the new comparisons
    dpo_batch_size: int = 8  # dpo: comparisons per micro-batch (at most: fewer new comparisons train in one batch of all)
    max_new_tokens: int = 48  # response tokens at most (RL samples and the evaluation)
    max_length: int = 128  # prompt + response tokens
    eval_prompts: int = 128  # held-out prompts in the evaluation (the first N of the eval data)
    seed: int = 0  # seed of every stage
    precision: Literal["fp32", "bf16"] = "bf16"  # bf16 = autocast where supported
    device: str = "auto"  # auto (cuda if available, else cpu), cpu, cuda, cuda:N
    resume: bool = False  # continue an interrupted round in --out: finished stages are kept, the interrupted one resumes
    progress: bool = True  # progress bars inside each stage

    def __post_init__(self):
        checks = {"project": self.project is None or bool(self.project.strip()),
                  "min_gold_accuracy": 0.0 <= self.min_gold_accuracy <= 1.0, "min_pairs": self.min_pairs >= 1,
                  "rm_epochs": self.rm_epochs > 0, "rm_lr": self.rm_lr > 0, "rm_batch_size": self.rm_batch_size >= 1,
                  "rl_steps": self.rl_steps >= 1, "rl_batch_size": self.rl_batch_size >= 1,
                  "num_samples": self.num_samples >= 0, "rl_lr": self.rl_lr > 0, "kl_coef": self.kl_coef >= 0,
                  "dpo_beta": self.dpo_beta > 0, "dpo_lr": self.dpo_lr > 0, "dpo_epochs": self.dpo_epochs > 0,
                  "dpo_batch_size": self.dpo_batch_size >= 1, "eval_prompts": self.eval_prompts >= 1,
                  "holdout": 0 <= self.holdout < 1,
                  "max_new_tokens": 1 <= self.max_new_tokens < self.max_length}
        check_fields(self, checks)
        if self.algo in ("rloo", "grpo") and self.num_samples == 1:
            raise ValueError(f"--algo {self.algo} compares samples of the same prompt: num_samples must be >= 2")
        if self.method == "dpo" and self.prompts is not None:
            raise ValueError("--prompts is the RL stage's (--method rm+ppo); DPO trains on the exported comparisons")
