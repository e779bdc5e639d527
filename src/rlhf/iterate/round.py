"""`rlhf iterate --from RUN_DIR --project NAME`: one round of deploy, collect, retrain.

    OUT/config.yaml          this round's configuration
    OUT/data/                comparisons.jsonl (the new labels, exported), labels.json (their ids and
                             sources), prompts.jsonl (rm+ppo: the RL prompts)
    OUT/rm, OUT/ppo|rloo|..  rm+ppo: the reward model warm-started from the current one, then RL from
    OUT/dpo                  the current policy against it; dpo: DPO from the current policy
    OUT/policy               the new policy (a link to the stage's model/): `rlhf serve --model OUT/policy`
    OUT/eval.json            the new policy against the current one (`rlhf eval policy`)
    OUT/lineage.json         round, parent, labels and their sources, stages, evaluation
    OUT/summary.json         the round's figures and wall time

Each stage is an ordinary run directory. `--resume` keeps what finished (a stage with its
summary.json, the exported labels, the evaluation) and resumes the interrupted stage from its
own checkpoint; the labels are not exported again, so a resumed round trains on the same ones.
The store records the round and the labels it read once it is evaluated; the next round reads
only labels no round has recorded.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path

from ..config import DPOConfig, EvalPolicyConfig, IterateConfig, PPOConfig, RewardConfig, load_yaml, to_yaml
from ..data.files import read_json as _read_json, write_jsonl as _write_jsonl
from ..runtime import lock
from ..runtime.files import atomic_write_text, dumps
from .collect import Collected, collect
from .parent import LINEAGE, POLICY_LINK, Parent, resolve_parent

# Fields a resumed round must share with the round it continues: they decide what it trains on and how.
RESUME_FIELDS = ("from_run", "project", "db", "method", "rule", "drop_ties", "min_gold_accuracy", "algo", "seed")


def _finished(run_dir: Path) -> bool:
    return (run_dir / "summary.json").exists()


class Round:
    def __init__(self, cfg: IterateConfig, parent: Parent):
        self.cfg, self.parent = cfg, parent
        self.out = Path(cfg.out).resolve()
        self.data = self.out / "data"
        self.number = parent.round + 1

    def _common(self, name: str) -> dict:
        cfg = self.cfg
        return dict(out=str(self.out / name), seed=cfg.seed, precision=cfg.precision, device=cfg.device,
                    resume=cfg.resume, progress=cfg.progress)

    # ------------------------------------------------------------ labels

    def saved_labels(self) -> Collected | None:
        """The labels an interrupted round exported (a resumed round trains on the same ones), or None."""
        comparisons, record = self.data / "comparisons.jsonl", self.data / "labels.json"
        if not (record.exists() and comparisons.exists()):
            return None
        rows = [json.loads(line) for line in comparisons.read_text(encoding="utf-8").splitlines() if line.strip()]
        return Collected.from_json(_read_json(record), rows)

    def new_labels(self) -> Collected:
        """The store's labels since the last round, refused when they give fewer than --min-pairs comparisons."""
        from ..feedback.store import open_store

        with open_store(self.cfg.db)() as s:
            collected = collect(s, self.cfg)
        if len(collected.rows) < self.cfg.min_pairs:
            raise ValueError(
                f"only {len(collected.rows)} new comparisons for {self.cfg.project!r} since the last round "
                f"({len(collected.labels)} labels no earlier round read; watermarks {collected.watermarks_before}; rule "
                f"{self.cfg.rule}), fewer than --min-pairs {self.cfg.min_pairs}: collect more feedback first")
        return collected

    def save_labels(self, collected: Collected) -> None:
        _write_jsonl(self.data / "comparisons.jsonl", collected.rows)
        atomic_write_text(self.data / "labels.json", dumps(collected.to_json(), indent=1) + "\n")

    def prompts(self, collected: Collected) -> Path:
        """RL prompts: --prompts, else each distinct prompt of the new comparisons once."""
        if self.cfg.prompts:
            return Path(self.cfg.prompts)
        path, seen, rows = self.data / "prompts.jsonl", set(), []
        for row in collected.rows:
            key = json.dumps(row["prompt"], sort_keys=True)
            if key not in seen:
                seen.add(key)
                rows.append({"prompt": row["prompt"]})
        if not path.exists():
            _write_jsonl(path, rows)
        return path

    # ------------------------------------------------------------ stages

    def reward_model(self) -> Path:
        from ..train import reward

        cfg, run = self.cfg, self.out / "rm"
        if not _finished(run):
            reward.run(RewardConfig(model=str(self.parent.reward_model), data=str(self.data / "comparisons.jsonl"),
                                    epochs=cfg.rm_epochs, lr=cfg.rm_lr, batch_size=cfg.rm_batch_size,
                                    max_length=cfg.max_length, **self._common("rm")))
        return run / "model"

    def rl(self, reward_model: Path, prompts: Path) -> Path:
        from ..data.formats import read_prompts
        from ..train import ppo
        from ..train.ppo_update import ALGORITHMS

        cfg = self.cfg
        run = self.out / cfg.algo
        if not _finished(run):
            batch = min(cfg.rl_batch_size, len(read_prompts(prompts)))
            k = cfg.num_samples or ALGORITHMS[cfg.algo].default_samples
            ppo.run(PPOConfig(model=str(self.parent.policy), data=str(prompts), reward=str(reward_model),
                              algo=cfg.algo, num_samples=cfg.num_samples, max_steps=cfg.rl_steps, batch_size=batch,
                              minibatch_size=batch * k, lr=cfg.rl_lr, kl_coef=cfg.kl_coef,
                              max_new_tokens=cfg.max_new_tokens, max_length=cfg.max_length, **self._common(cfg.algo)))
        return run / "model"

    def dpo(self) -> Path:
        from ..train import dpo

        cfg, run = self.cfg, self.out / "dpo"
        if not _finished(run):
            dpo.run(DPOConfig(model=str(self.parent.policy), data=str(self.data / "comparisons.jsonl"), loss="dpo",
                              beta=cfg.dpo_beta, lr=cfg.dpo_lr, epochs=cfg.dpo_epochs, batch_size=cfg.dpo_batch_size,
                              max_length=cfg.max_length, max_new_tokens=cfg.max_new_tokens, kl_prompts=0,
                              **self._common("dpo")))
        return run / "model"

    def link_policy(self, model: Path) -> Path:
        """OUT/policy -> the stage's model/ (relative, so the round can be moved whole)."""
        link = self.out / POLICY_LINK
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(model.relative_to(self.out))
        return link

    def evaluate(self, policy: Path, judge: str) -> dict:
        """The new policy against the current one on the held-out prompts."""
        from ..eval import policy as eval_policy

        cfg, path = self.cfg, self.out / "eval.json"
        if not path.exists():
            with contextlib.redirect_stdout(io.StringIO()):  # the stage prints its whole report; one line here
                eval_policy.run(EvalPolicyConfig(
                    model=str(policy), reference=str(self.parent.policy), data=str(self.parent.eval_data), judge=judge,
                    out=str(path), max_prompts=cfg.eval_prompts, max_new_tokens=cfg.max_new_tokens,
                    max_length=cfg.max_length, seed=cfg.seed + 7, precision=cfg.precision, device=cfg.device,
                    progress=cfg.progress))
        report = _read_json(path)
        keys = ("win_rate", "ci_low", "ci_high", "wins", "ties", "losses", "n", "policy_score", "reference_score")
        return {"judge": judge, **{k: report[k] for k in keys}, "kl_to_parent": report["kl_to_reference"],
                "file": path.name}

    # ------------------------------------------------------------ lineage

    def record(self, collected: Collected, policy: Path, result: dict) -> int:
        """The round and the labels it read, in the store (once: a resumed round finds its row)."""
        from ..feedback import repo
        from ..feedback.store import open_store

        with open_store(self.cfg.db)() as s:
            row = repo.round_by_run_dir(s, str(self.out))
            if row is None:
                row = repo.record_round(s, self.cfg.project, self.number, str(self.out), str(policy),
                                        str(self.parent.policy), self.cfg.method, result,
                                        [(label.id, label.project_id, label.used) for label in collected.labels])
                s.commit()
            return row.id

    def lineage(self, collected: Collected, stages: dict, reward_model: Path | None, result: dict,
                round_id: int) -> dict:
        from sqlalchemy.engine import make_url

        from ..feedback.store import database_url

        parent, cfg = self.parent, self.cfg
        return {
            "round": self.number, "series": cfg.project, "method": cfg.method,
            "algo": cfg.algo if cfg.method == "rm+ppo" else None,
            "parent": {"run": str(parent.run_dir), "kind": parent.kind, "round": parent.round,
                       "policy": str(parent.policy), "reward_model": _str(parent.reward_model)},
            "policy": str((self.out / POLICY_LINK).resolve()), "reward_model": _str(reward_model),
            "eval_data": str(parent.eval_data),
            "labels": {"read": len(collected.labels), "used": sum(label.used for label in collected.labels),
                       "comparisons": len(collected.rows), "rule": cfg.rule, "sources": collected.sources(),
                       "ids": [label.id for label in collected.labels],
                       "watermarks": {"before": collected.watermarks_before, "after": collected.watermarks_after()},
                       "not_read": collected.not_read},
            "stages": stages, "eval": result,
            "store": {"db": make_url(database_url(cfg.db)).render_as_string(hide_password=True),
                      "training_round_id": round_id},
        }


def _str(path) -> str | None:
    return None if path is None else str(path)


def _check_out(cfg: IterateConfig, out: Path) -> None:
    """Refuse a non-empty --out without --resume, and a --resume of a round that had other settings."""
    earlier = [p.name for p in out.iterdir() if p.name != lock.LOCK_NAME] if out.is_dir() else []
    if earlier and not cfg.resume:
        raise FileExistsError(f"{out} already holds a run ({', '.join(sorted(earlier)[:5])}): pass --resume to "
                              "continue that round, or choose another --out")
    if not (out / "config.yaml").exists():
        return
    before = load_yaml(out / "config.yaml", IterateConfig)
    changed = [f"{name}: {before.get(name)!r} -> {getattr(cfg, name)!r}" for name in RESUME_FIELDS
               if name in before and before[name] != getattr(cfg, name)]
    if changed:
        raise ValueError(f"--resume of {out} with other settings than the round it continues ({'; '.join(changed)}): "
                         "resume with the same ones, or start a new round in another --out")


def _prepare_out(cfg: IterateConfig, out: Path) -> None:
    """Create and lock --out; config.yaml on a new round, config.resume-N.yaml on each resume."""
    out.mkdir(parents=True, exist_ok=True)
    lock.acquire(out)
    name, n = "config.yaml", 0
    while (out / name).exists():
        n += 1
        name = f"config.resume-{n}.yaml"
    atomic_write_text(out / name, to_yaml(cfg))


def run(cfg: IterateConfig) -> Path:
    if not cfg.progress:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    start = time.perf_counter()
    parent = resolve_parent(cfg)  # every input checked, and the labels read, before anything is written
    out = Path(cfg.out).resolve()
    _check_out(cfg, out)
    rnd = Round(cfg, parent)
    print(f"rlhf iterate: round {rnd.number} of {cfg.project!r} from {parent.run_dir} ({parent.kind}), "
          f"method {cfg.method}", flush=True)
    collected = rnd.saved_labels() if cfg.resume else None
    exported = collected is None
    if exported:
        collected = rnd.new_labels()
    _prepare_out(cfg, out)
    if exported:
        rnd.save_labels(collected)
    sources = ", ".join(f"{name}: {counts['read']}" for name, counts in collected.sources().items())
    print(f"rlhf iterate: {len(collected.labels)} new labels -> {len(collected.rows)} comparisons ({sources})",
          flush=True)
    stages = {"data": "data"}
    if cfg.method == "rm+ppo":
        reward_model = rnd.reward_model()
        model = rnd.rl(reward_model, rnd.prompts(collected))
        stages.update(rm="rm", rl=cfg.algo)
    else:
        reward_model = parent.reward_model
        model = rnd.dpo()
        stages.update(dpo="dpo")
    policy = rnd.link_policy(model)
    judge = cfg.judge or str(reward_model)
    result = rnd.evaluate(policy.resolve(), judge)
    stages.update(eval="eval.json")
    round_id = rnd.record(collected, policy.resolve(), result)
    lineage = rnd.lineage(collected, stages, reward_model, result, round_id)
    atomic_write_text(out / LINEAGE, dumps(lineage, indent=2) + "\n")
    summary = {"round": rnd.number, "method": cfg.method, "labels": lineage["labels"]["read"],
               "comparisons": len(collected.rows), "eval": result, "wall_s": time.perf_counter() - start}
    atomic_write_text(out / "summary.json", dumps(summary, indent=2) + "\n")
    lock.release(out)
    print(f"rlhf iterate: round {rnd.number}: win rate against round {parent.round} {result['win_rate']:.3f} "
          f"[{result['ci_low']:.3f}, {result['ci_high']:.3f}] judged by {judge} over {result['n']} prompts; "
          f"deploy with rlhf serve --model {policy}", flush=True)
    return policy


__all__ = ["run", "Round", "RESUME_FIELDS"]
