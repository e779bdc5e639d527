"""`rlhf rm --ensemble K` and `rlhf rm --warm K`: K reward models trained in one run.

Each member is an ordinary `rlhf rm` run in `OUT/members/i/` (its own config.yaml, metrics,
checkpoints and model/), on the same data with seed `seed + i`, which sets its data order:

- `--ensemble K`: member i also draws its value head from seed + i (independent members, Lakshminarayanan
  et al. 2017). `OUT/model/` is an ensemble directory (`rlhf.models.ensemble`) whose score is the
  mean of the members' standardised scores and whose uncertainty is their standard deviation;
- `--warm K` (WARM, Ramé et al. 2024): every member starts from one shared start, the same
  backbone and the same value head (drawn from --init-seed, default --seed), and differs only in
  data order; fine-tuned from a shared start the members stay linearly connected, so their
  weights are averaged, element by element, into one ordinary reward model in `OUT/model/`.

The run resumes member by member: `--resume` keeps each member that finished (its summary.json
and complete model/; its config must be this run's), continues a member that was killed from its
newest checkpoint, and starts the members not yet begun.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import torch

from ..config import RewardConfig
from ..models.ensemble import average_state_dicts
from ..models.load import COMPLETE_MARKER
from ..models.reward import load_reward_backbone
from ..runtime import RunDir
from ..runtime.checkpoint import check_resume_config, saved_result_config
from ..runtime.files import notice

MEMBERS_DIR = "members"


def member_count(cfg: RewardConfig) -> int:
    return cfg.ensemble or cfg.warm


def member_config(cfg: RewardConfig, i: int, out: Path) -> RewardConfig:
    """The config of member i: data order from seed + i; the value head from the shared init seed
    (warm) or from its own seed (ensemble)."""
    shared_init = cfg.seed if cfg.init_seed is None else cfg.init_seed
    init_seed = shared_init if cfg.warm else (None if cfg.init_seed is None else cfg.init_seed + i)
    return dataclasses.replace(cfg, out=str(out), seed=cfg.seed + i, init_seed=init_seed, ensemble=0, warm=0,
                               resume=False, overwrite=False)


def is_finished(member_dir: Path) -> bool:
    return (member_dir / "summary.json").is_file() and (member_dir / "model" / COMPLETE_MARKER).is_file()


def train_members(cfg: RewardConfig, run_dir: RunDir, train_one: Callable[..., Path]) -> list[tuple[Path, dict]]:
    """Train (or keep, or resume) each member; returns [(model dir, summary)] in member order.

    `train_one(member_cfg, part_of=run_dir)` trains one reward model (`rlhf.train.reward.train_single`).
    """
    finished = []
    for i in range(member_count(cfg)):
        out = run_dir.path / MEMBERS_DIR / str(i)
        member_cfg = member_config(cfg, i, out)
        if is_finished(out):
            check_resume_config(saved_result_config(out / "config.yaml"), member_cfg, f"ensemble member {i} in {out}")
            notice(f"member {i} of {member_count(cfg)}: finished earlier, kept ({out})")
        else:
            train_one(dataclasses.replace(member_cfg, resume=out.exists()), part_of=run_dir)
        finished.append((out / "model", json.loads((out / "summary.json").read_text(encoding="utf-8"))))
    return finished


def average_members(member_dirs: list[Path], trust_remote_code: bool = False):
    """(model, tokenizer, input_format): member 0's model holding the element-wise mean of all
    members' weights (WARM)."""
    loaded = [load_reward_backbone(d, "auto", trust_remote_code) for d in member_dirs]
    model, tokenizer, input_format = loaded[0]
    if any(fmt != input_format for _, _, fmt in loaded):
        raise ValueError("WARM members must share one architecture and input format")
    averaged = average_state_dicts([m.state_dict() for m, _, _ in loaded])
    model.load_state_dict(averaged)
    return model, tokenizer, input_format


def pair_accuracy_on(rm, pairs) -> dict:
    """Accuracy and mean margin of a loaded reward model (single or ensemble) on comparisons."""
    prompts = [p.prompt for p in pairs]
    chosen = rm.score(prompts, [p.chosen for p in pairs])
    rejected = rm.score(prompts, [p.rejected for p in pairs])
    margins = chosen - rejected
    return {"eval_accuracy": float((margins > 0).double().mean()), "eval_margin": float(margins.mean()),
            "eval_pairs": len(pairs)}


def member_metrics(members: list[tuple[Path, dict]]) -> list[dict]:
    """One metrics.jsonl line per member (its final figures), `step` = member number + 1."""
    rows = []
    for i, (_, summary) in enumerate(members):
        rows.append({"step": i + 1, "member": i, "loss": summary.get("train_loss"), "lr": None,
                     "tokens_per_s": summary.get("tokens_per_s"), "elapsed_s": summary.get("wall_s"),
                     "accuracy": summary.get("train_accuracy"), "eval_accuracy": summary.get("eval_accuracy")})
    return rows


@torch.no_grad()
def weight_distance(member_dirs: list[Path]) -> float:
    """Mean over members of ||theta_k - theta_avg|| / ||theta_avg||: how far apart the members are."""
    from safetensors.torch import load_file

    weights = []
    for d in member_dirs:
        sd = {}
        for file in sorted(d.glob("*.safetensors")):
            sd.update(load_file(str(file)))
        weights.append(torch.cat([v.double().flatten() for k, v in sorted(sd.items()) if v.is_floating_point()]))
    stacked = torch.stack(weights)
    mean = stacked.mean(0)
    return float(((stacked - mean).norm(dim=1) / mean.norm()).mean())
