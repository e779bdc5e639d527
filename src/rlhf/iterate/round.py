"""`rlhf iterate --from RUN_DIR --project NAME`: one round of deploy, collect, retrain.

    OUT/config.yaml          this round's configuration
    OUT/data/                comparisons.jsonl (the new labels the stages train on), heldout.jsonl
                             (those kept out to judge by, when no gold or --judge exists), labels.json
                             (their ids and sources), prompts.jsonl (rm+ppo: the RL prompts)
    OUT/rm, OUT/ppo|rloo|..  rm+ppo: the reward model warm-started from the current one, then RL from
    OUT/dpo                  the current policy against it; dpo: DPO from the current policy
    OUT/policy               the new policy (a link to the stage's model/): `rlhf serve --model OUT/policy`
    OUT/eval.json            the new policy against the current one, by a judge that never is the reward
                             model trained on the same labels (rlhf.iterate.judge)
    OUT/lineage.json         round, parent, labels and their sources, stages, evaluation
    OUT/summary.json         the round's figures and wall time

    OUT/timings.json, logs/  the steps that finished and their seconds; what each step printed

The round is a list of steps (export the labels, the reward model, RL or DPO, the evaluation, the
record) run by the one pipeline runner (rlhf.runtime.steps), which prints the time left and names
a failing step's log. Each stage is an ordinary run directory. `--resume` keeps the steps that
finished and resumes the interrupted stage from its own checkpoint; the labels are not exported
again, so a resumed round trains on the same ones. The store records the round and the labels it
read once it is evaluated; the next round reads only labels no round has recorded.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import time
from pathlib import Path

from ..config import DPOConfig, EvalPolicyConfig, IterateConfig, PPOConfig, RewardConfig, load_yaml, to_yaml
from ..data.files import read_json as _read_json, write_jsonl as _write_jsonl
from ..runtime import lock
from ..runtime.files import atomic_write_text, dumps
from ..runtime.steps import Runner, Step
from .collect import Collected, collect
from .judge import HELDOUT, HELDOUT_FILE, choose_judge, heldout_evaluation, recorded_gold, split_heldout
from .parent import LINEAGE, POLICY_LINK, Parent, resolve_parent

# Fields a resumed round must share with the round it continues: they decide what it trains on and how.
RESUME_FIELDS = ("from_run", "project", "db", "method", "rule", "drop_ties", "min_gold_accuracy", "algo", "seed",
                 "judge", "holdout")


def planned_seconds(cfg: IterateConfig, comparisons: int) -> dict:
    """Seconds per step kind, for the time left only: the full demo's rates (rlhf.demo.plan.FULL, a
    5M-parameter model in fp32 on a 2-core EPYC: the reward model 0.1 s and DPO 0.08 s per comparison
    and epoch, RL 0.29 s per response with a critic and 4 update epochs, 0.074 s without, the
    evaluation of policy and reference 0.1 s per prompt, at 48 new tokens) times this round's sizes.
    Another model or machine runs at another pace: the runner rescales by the pace of the steps done."""
    from ..config.algorithms import ALGORITHMS

    estimator, tokens = ALGORITHMS[cfg.algo], cfg.max_new_tokens / 48
    responses = cfg.rl_steps * cfg.rl_batch_size * (cfg.num_samples or estimator.default_samples)
    return {"export": 0.1, "rm": 0.1 * comparisons * cfg.rm_epochs, "dpo": 0.08 * comparisons * cfg.dpo_epochs,
            "rl": responses * (0.29 if estimator.uses_critic else 0.074) * tokens,
            "eval": 0.1 * cfg.eval_prompts * tokens, "record": 0.1}


def _finished(run_dir: Path) -> bool:
    return (run_dir / "summary.json").exists()


class Round:
    def __init__(self, cfg: IterateConfig, parent: Parent, started: float):
        self.cfg, self.parent, self.started = cfg, parent, started
        self.out = Path(cfg.out).resolve()
        self.data = self.out / "data"
        self.number = parent.round + 1
        self.trained = cfg.algo if cfg.method == "rm+ppo" else "dpo"  # the stage whose model is the new policy
        # rm+ppo trains a new reward model; DPO keeps the one it was given
        self.reward_model_dir = self.out / "rm" / "model" if cfg.method == "rm+ppo" else parent.reward_model
        self.judge = choose_judge(cfg, parent, self.reward_model_dir if cfg.method == "rm+ppo" else None)
        self.train_rows: list[dict] = []  # the new comparisons the stages train on
        self.heldout_rows: list[dict] = []  # those kept out to judge by (HELDOUT)

    def split(self, collected: Collected) -> None:
        """Training and held-out comparisons (a resumed round's were read back by saved_labels), and
        batch sizes the training comparisons fill; ValueError before anything is written."""
        if not self.train_rows:
            self.train_rows, self.heldout_rows = (split_heldout(collected.rows, self.cfg.holdout, self.cfg.seed)
                                                  if self.judge.kind == HELDOUT else (collected.rows, []))
        n, cfg = len(self.train_rows), self.cfg
        self.rm_batch_size, self.dpo_batch_size = min(cfg.rm_batch_size, n), min(cfg.dpo_batch_size, n)
        asked = cfg.rm_batch_size if cfg.method == "rm+ppo" else cfg.dpo_batch_size
        if n < asked:  # a small export still trains: one batch of all it holds
            flag = "--rm-batch-size" if cfg.method == "rm+ppo" else "--dpo-batch-size"
            print(f"rlhf iterate: {n} comparisons to train on, fewer than {flag} {asked}: batches of {n}", flush=True)

    def steps(self, collected: Collected) -> list[Step]:
        """Export, then rm -> RL (rm+ppo) or DPO, then the evaluation; the record runs on every resume
        (the store keeps one row per round, lineage.json and summary.json are written again)."""
        cfg = self.cfg
        steps = [Step("labels", functools.partial(self.save_labels, collected), (),
                      f"export {len(collected.rows)} comparisons", kind="export")]
        if cfg.method == "rm+ppo":
            steps += [Step("rm", self.reward_model, ("labels",), "reward model, warm-started from the current one"),
                      Step(cfg.algo, self.rl, ("rm",), f"{cfg.algo} from the current policy", kind="rl")]
        else:
            steps.append(Step("dpo", self.dpo, ("labels",), "DPO from the current policy"))
        steps += [Step("eval", self.evaluate, (self.trained,), f"the new policy against round {self.parent.round}"),
                  Step("record", functools.partial(self.finish, collected), ("eval",),
                       "lineage.json, summary.json and the round in the store", always=True)]
        return steps

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
        read = lambda path: [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()  # noqa: E731
                             if line.strip()] if path.exists() else []
        self.train_rows, self.heldout_rows = read(comparisons), read(self.data / HELDOUT_FILE)
        return Collected.from_json(_read_json(record), self.train_rows + self.heldout_rows)

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
        """The training and held-out comparisons and the labels' record; rm+ppo without --prompts: each
        distinct prompt of the training comparisons once."""
        _write_jsonl(self.data / "comparisons.jsonl", self.train_rows)
        if self.heldout_rows:
            _write_jsonl(self.data / HELDOUT_FILE, self.heldout_rows)
        atomic_write_text(self.data / "labels.json", dumps(collected.to_json(), indent=1) + "\n")
        path, seen, rows = self.prompts(), set(), []
        if self.cfg.method != "rm+ppo" or self.cfg.prompts or path.exists():
            return
        for row in self.train_rows:
            key = json.dumps(row["prompt"], sort_keys=True)
            if key not in seen:
                seen.add(key)
                rows.append({"prompt": row["prompt"]})
        _write_jsonl(path, rows)

    def prompts(self) -> Path:
        """RL prompts: --prompts, else each distinct prompt of the new comparisons (save_labels writes them)."""
        return Path(self.cfg.prompts) if self.cfg.prompts else self.data / "prompts.jsonl"

    # ------------------------------------------------------------ stages

    def reward_model(self) -> None:
        from ..train import reward

        cfg, run = self.cfg, self.out / "rm"
        if not _finished(run):  # a stage that finished before the runner recorded it
            reward.run(RewardConfig(model=str(self.parent.reward_model), data=str(self.data / "comparisons.jsonl"),
                                    epochs=cfg.rm_epochs, lr=cfg.rm_lr, batch_size=self.rm_batch_size,
                                    max_length=cfg.max_length, **self._common("rm")))

    def rl(self) -> None:
        from ..data.formats import read_prompts
        from ..train import ppo
        from ..train.ppo_update import ALGORITHMS

        cfg, prompts = self.cfg, self.prompts()
        run = self.out / cfg.algo
        if not _finished(run):
            batch = min(cfg.rl_batch_size, len(read_prompts(prompts)))
            k = cfg.num_samples or ALGORITHMS[cfg.algo].default_samples
            ppo.run(PPOConfig(model=str(self.parent.policy), data=str(prompts), reward=str(self.reward_model_dir),
                              algo=cfg.algo, num_samples=cfg.num_samples, max_steps=cfg.rl_steps, batch_size=batch,
                              minibatch_size=batch * k, lr=cfg.rl_lr, kl_coef=cfg.kl_coef,
                              max_new_tokens=cfg.max_new_tokens, max_length=cfg.max_length, **self._common(cfg.algo)))

    def dpo(self) -> None:
        from ..train import dpo

        cfg, run = self.cfg, self.out / "dpo"
        if not _finished(run):
            dpo.run(DPOConfig(model=str(self.parent.policy), data=str(self.data / "comparisons.jsonl"), loss="dpo",
                              beta=cfg.dpo_beta, lr=cfg.dpo_lr, epochs=cfg.dpo_epochs, batch_size=self.dpo_batch_size,
                              max_length=cfg.max_length, max_new_tokens=cfg.max_new_tokens, kl_prompts=0,
                              **self._common("dpo")))

    def link_policy(self, model: Path) -> Path:
        """OUT/policy -> the stage's model/ (relative, so the round can be moved whole)."""
        link = self.out / POLICY_LINK
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(model.relative_to(self.out))
        return link

    def evaluate(self) -> None:
        """OUT/policy, and the new policy against the current one: by held-out labels, or on the
        held-out prompts by the judge's scores."""
        from ..data.formats import read_prompts
        from ..eval import policy as eval_policy

        cfg, path = self.cfg, self.out / "eval.json"
        policy = self.link_policy(self.out / self.trained / "model").resolve()
        if not path.exists() and self.judge.kind == HELDOUT:
            reward_model = self.reward_model_dir if cfg.method == "rm+ppo" else None  # trained on the other labels
            prompts = [p.prompt for p in read_prompts(self.parent.eval_data)]
            report = heldout_evaluation(policy, self.parent.policy, self.data / HELDOUT_FILE, reward_model, prompts,
                                        cfg)
            atomic_write_text(path, dumps({"judge": self.judge.to_json(), **report}, indent=2) + "\n")
        elif not path.exists():
            with contextlib.redirect_stdout(io.StringIO()):  # the stage prints its whole report; one line here
                eval_policy.run(EvalPolicyConfig(
                    model=str(policy), reference=str(self.parent.policy), data=str(self.parent.eval_data),
                    judge=self.judge.spec, out=str(path), max_prompts=cfg.eval_prompts,
                    max_new_tokens=cfg.max_new_tokens,
                    max_length=cfg.max_length, seed=cfg.seed + 7, precision=cfg.precision, device=cfg.device,
                    progress=cfg.progress))

    def result(self) -> dict:
        """The evaluation's figures: `judge` says by whom (`judge_kind`: given, gold or held-out labels)."""
        report = _read_json(self.out / "eval.json")
        if self.judge.kind == HELDOUT:
            keys = ("label_accuracy", "ci_low", "ci_high", "wins", "ties", "losses", "n", "reward_model_accuracy")
        else:
            keys = ("win_rate", "ci_low", "ci_high", "wins", "ties", "losses", "n", "policy_score", "reference_score")
        return {"judge": self.judge.describe(), "judge_kind": self.judge.kind, **{k: report.get(k) for k in keys},
                "kl_to_parent": report["kl_to_reference"], "file": "eval.json"}

    def headline(self) -> str:
        """One line on how the new policy did, and by which judge."""
        r, parent = self.result(), self.parent.round
        if self.judge.kind == HELDOUT:
            return (f"agrees with {r['label_accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] of {r['n']} "
                    f"held-out labels (moves towards the chosen response more than round {parent}'s policy does)")
        return (f"win rate against round {parent} {r['win_rate']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] judged "
                f"by {self.judge.describe()} over {r['n']} prompts")

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
            "eval_data": str(parent.eval_data), "judge": self.judge.to_json(), "gold": recorded_gold(parent),
            "labels": {"read": len(collected.labels), "used": sum(label.used for label in collected.labels),
                       "comparisons": len(collected.rows), "rule": cfg.rule, "sources": collected.sources(),
                       "ids": [label.id for label in collected.labels],
                       "watermarks": {"before": collected.watermarks_before, "after": collected.watermarks_after()},
                       "not_read": collected.not_read},
            "stages": stages, "eval": result,
            "store": {"db": make_url(database_url(cfg.db)).render_as_string(hide_password=True),
                      "training_round_id": round_id},
        }

    def finish(self, collected: Collected) -> None:
        """The round in the store, lineage.json and summary.json."""
        result, policy = self.result(), (self.out / POLICY_LINK).resolve()
        trained = {"rm": "rm", "rl": self.cfg.algo} if self.cfg.method == "rm+ppo" else {"dpo": "dpo"}
        stages = {"data": "data", **trained, "eval": "eval.json"}
        round_id = self.record(collected, policy, result)
        lineage = self.lineage(collected, stages, self.reward_model_dir, result, round_id)
        atomic_write_text(self.out / LINEAGE, dumps(lineage, indent=2) + "\n")
        summary = {"round": self.number, "method": self.cfg.method, "labels": lineage["labels"]["read"],
                   "comparisons": len(collected.rows), "trained_on": len(self.train_rows),
                   "heldout": len(self.heldout_rows), "judge": result["judge"], "eval": result,
                   "wall_s": time.perf_counter() - self.started}
        atomic_write_text(self.out / "summary.json", dumps(summary, indent=2) + "\n")


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
    rnd = Round(cfg, parent, start)
    print(f"rlhf iterate: round {rnd.number} of {cfg.project!r} from {parent.run_dir} ({parent.kind}), "
          f"method {cfg.method}", flush=True)
    collected = rnd.saved_labels() if cfg.resume else None
    if collected is None:
        collected = rnd.new_labels()
    rnd.split(collected)  # held-out labels and batch sizes, refused before anything is written
    _prepare_out(cfg, out)
    sources = ", ".join(f"{name}: {counts['read']}" for name, counts in collected.sources().items())
    held = f", {len(rnd.heldout_rows)} of them held out" if rnd.heldout_rows else ""
    print(f"rlhf iterate: {len(collected.labels)} new labels -> {len(collected.rows)} comparisons ({sources}){held}; "
          f"judge: {rnd.judge.describe()}", flush=True)
    runner = Runner(out, label=f"rlhf iterate round {rnd.number}", seconds=planned_seconds(cfg, len(collected.rows)),
                    resume=cfg.resume)
    runner.run(rnd.steps(collected))
    lock.release(out)
    policy = out / POLICY_LINK
    print(f"rlhf iterate: round {rnd.number}: {rnd.headline()}; deploy with rlhf serve --model {policy}", flush=True)
    return policy


__all__ = ["run", "Round", "RESUME_FIELDS"]
