"""The round `rlhf iterate --from RUN_DIR` continues: its policy, reward model and held-out prompts.

RUN_DIR is one of
- an `rlhf iterate` round: its lineage.json names everything (policy/ is the round's policy);
- an `rlhf demo` directory: the SFT policy (sft/model), the reward model (rm/model) and the
  held-out openings (data/prompts-eval.jsonl), i.e. round 0 of the demo task;
- any stage run directory with a model/: the policy alone (round 0).
Flags (--policy, --reward-model, --eval-data) replace what the directory would give.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..config import IterateConfig

LINEAGE = "lineage.json"
POLICY_LINK = "policy"  # OUT/policy: the round's policy, what `rlhf serve --model` is given


@dataclass(frozen=True)
class Parent:
    run_dir: Path
    kind: str  # iterate | demo | run
    round: int  # 0 unless the directory is an iterate round
    policy: Path
    reward_model: Path | None
    eval_data: Path | None


def _absolute(path) -> Path | None:
    return None if path is None else Path(path).expanduser().resolve()


def resolve_parent(cfg: IterateConfig) -> Parent:
    """The current round named by `cfg.from_run`, with `cfg`'s overrides; FileNotFoundError naming what is missing."""
    run = Path(cfg.from_run).expanduser()
    if not run.is_dir():
        raise FileNotFoundError(f"--from {run}: no such run directory")
    if (run / LINEAGE).exists():
        lineage = json.loads((run / LINEAGE).read_text(encoding="utf-8"))
        kind, number = "iterate", int(lineage["round"])
        policy, reward, eval_data = run / POLICY_LINK, lineage.get("reward_model"), lineage.get("eval_data")
    elif (run / "sft" / "model").is_dir():
        kind, number, policy = "demo", 0, run / "sft" / "model"
        reward = run / "rm" / "model" if (run / "rm" / "model").is_dir() else None
        eval_data = run / "data" / "prompts-eval.jsonl" if (run / "data" / "prompts-eval.jsonl").exists() else None
    elif (run / "model").is_dir():
        kind, number, policy, reward, eval_data = "run", 0, run / "model", None, None
    else:
        hint = " (an iterate round that did not finish has no lineage.json: continue it with --resume)" \
            if (run / "config.yaml").exists() else ""
        raise FileNotFoundError(f"--from {run}: not an rlhf iterate round (lineage.json), an rlhf demo directory "
                                f"(sft/model) or a stage run (model/){hint}")
    parent = Parent(run.resolve(), kind, number, _absolute(cfg.policy or policy),
                    _absolute(cfg.reward_model or reward), _absolute(cfg.eval_data or eval_data))
    _check(parent, cfg)
    return parent


def _check(parent: Parent, cfg: IterateConfig) -> None:
    if not parent.policy.is_dir():
        raise FileNotFoundError(f"the policy to train from, {parent.policy}, is not a directory (--policy DIR)")
    if cfg.method == "rm+ppo" and parent.reward_model is None:
        raise FileNotFoundError(f"--method rm+ppo warm-starts the current reward model, and {parent.run_dir} has none: "
                                "pass --reward-model DIR (or use --method dpo)")
    if parent.reward_model is not None and not parent.reward_model.is_dir():
        raise FileNotFoundError(f"reward model {parent.reward_model} is not a directory (--reward-model DIR)")
    if parent.eval_data is None:
        raise FileNotFoundError(f"{parent.run_dir} names no held-out prompts for the evaluation: pass --eval-data FILE")
    if not parent.eval_data.exists():
        raise FileNotFoundError(f"held-out prompts {parent.eval_data} do not exist (--eval-data FILE)")
