"""`rlhf demo --task arithmetic`: RL with a verifiable reward on a task a 4M-parameter model can learn on a CPU.

    base (shipped, or --base DIR) -> SFT on worked problems ("47+38=" -> "85")
    -> GRPO and its variants (DAPO, Dr. GRPO, GSPO, RLOO, REINFORCE++, as `rlhf ppo --algo`)
       against the exact-match checker (`rlhf.rewards.verifiable:exact_match`), all from SFT
    -> every policy and SFT on the same held-out problems: greedy pass@1, sampled pass@1 and
       pass@k, KL to SFT -> summary.json and report.html

Every step is an ordinary stage run (`rlhf sft`, `rlhf ppo`) in its own subdirectory of --out with
its config.yaml. No reward model and no labels: the reward is a program, so the figures are
exact, not estimated. The steps run on the pipeline runner (rlhf.runtime.steps): the RL runs and
the evaluations side by side with --workers, `--resume` keeps the steps that finished and runs the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import DemoConfig, PPOConfig, SFTConfig
from ..data.files import read_json as _read_json, write_jsonl as _write_jsonl
from ..runtime.files import atomic_write_text
from ..runtime.files import dumps as strict_json
from ..runtime.steps import Step, clock
from .arithmetic import demonstrations, problems, prompt_rows
from .steps import run_demo

REWARD = "rlhf.rewards.verifiable:exact_match"  # the final number of a response against the row's "answer"


@dataclass(frozen=True)
class ArithmeticPlan:
    """The sizes of the arithmetic demo; `seconds` only feeds the progress display's estimate."""

    max_operand: int  # operands 0..max_operand (subtractions never below 0)
    demonstrations: int  # worked SFT examples
    sft_epochs: float
    sft_lr: float
    sft_batch: int
    train_prompts: int  # RL prompts (training split, none of them held out)
    eval_prompts: int  # held-out problems every policy answers
    eval_k: int  # samples per held-out problem at temperature 1 (sampled pass@1 and pass@k)
    rl_steps: int
    rl_batch: int  # prompts per RL step, each sampled rl_samples times
    rl_samples: int
    rl_lr: float
    kl_coef: float
    algos: tuple[str, ...]  # `rlhf ppo --algo` names, one RL run each
    max_new_tokens: int
    seconds: dict


FULL = ArithmeticPlan(
    max_operand=19, demonstrations=488, sft_epochs=64.0, sft_lr=2e-3, sft_batch=32, train_prompts=480, eval_prompts=122,
    eval_k=8,
    rl_steps=60, rl_batch=16, rl_samples=8, rl_lr=5e-5, kl_coef=0.01,
    algos=("grpo", "dapo", "dr-grpo", "gspo", "rloo", "reinforce++"), max_new_tokens=6,
    seconds={"data": 1, "sft": 150, "rl": 100, "eval": 8, "report": 5},
)

QUICK = ArithmeticPlan(
    max_operand=19, demonstrations=128, sft_epochs=1.0, sft_lr=2e-3, sft_batch=32, train_prompts=64, eval_prompts=16, eval_k=4,
    rl_steps=2, rl_batch=4, rl_samples=4, rl_lr=5e-5, kl_coef=0.01, algos=("grpo", "rloo"), max_new_tokens=6,
    seconds={"data": 1, "sft": 5, "rl": 5, "eval": 2, "report": 5},
)




class ArithmeticDemo:
    """The steps of one arithmetic demo; each writes into a subdirectory of `out`."""

    def __init__(self, cfg: DemoConfig, plan: ArithmeticPlan | None = None):
        self.cfg = cfg
        self.plan = plan or (QUICK if cfg.quick else FULL)
        self.out = Path(cfg.out)
        self.data = self.out / "data"
        self.timings: dict[str, float] = {}  # seconds per finished step (the runner's, earlier runs' included)
        self.finished_before: set[str] = set()  # steps an earlier run finished (--resume)
        self.started = time.perf_counter()

    def _common(self, name: str) -> dict:
        cfg = self.cfg
        return dict(out=str(self.out / name), seed=cfg.seed, precision=cfg.precision, device=cfg.device,
                    resume=cfg.resume, progress=cfg.progress, save_every=0)

    def _model(self, name: str) -> str:
        return str(self.out / name / "model")

    def steps(self) -> list[Step]:
        """Data and SFT, which every later step needs, and the report run alone; the RL runs and the
        evaluations may run side by side."""
        p = self.plan
        steps = [Step("data", self.make_data, (), "task data: worked problems, RL prompts, held-out problems",
                      alone=True),
                 Step("sft", self.sft, ("data",), f"supervised fine-tuning on {p.demonstrations} worked problems",
                      alone=True)]
        for algo in p.algos:
            steps.append(Step(algo, functools.partial(self.rl, algo), ("sft",),
                              f"{algo} against the exact-match checker, {p.rl_samples} samples per prompt", kind="rl"))
        for run in ("sft", *p.algos):
            steps.append(Step(f"eval-{run}", functools.partial(self.evaluate, run), ("data", run),
                              f"held-out accuracy of {run}", kind="eval", dir=run))
        steps.append(Step("report", self.report, tuple(s.name for s in steps), "summary.json and report.html",
                          alone=True, always=True, dir="."))
        return steps

    def make_data(self) -> None:
        p, seed = self.plan, self.cfg.seed
        _write_jsonl(self.data / "demonstrations.jsonl", [{"prompt": d.prompt, "completion": d.completion}
                                                          for d in demonstrations(p.demonstrations, seed, p.max_operand)])
        # RL prompts: training problems in another order (another seed); held-out ones are never trained on.
        _write_jsonl(self.data / "prompts-train.jsonl",
                     prompt_rows(problems("train", p.train_prompts, seed + 1, p.max_operand)))
        _write_jsonl(self.data / "prompts-eval.jsonl", prompt_rows(problems("test", p.eval_prompts, 0, p.max_operand)))

    def sft(self) -> None:
        from ..resources import BASE_MODEL
        from ..train import sft

        p = self.plan
        with contextlib.redirect_stdout(io.StringIO()):
            sft.run(SFTConfig(model=self.cfg.base or str(BASE_MODEL), data=str(self.data / "demonstrations.jsonl"),
                              epochs=p.sft_epochs, batch_size=p.sft_batch, lr=p.sft_lr, max_length=32, log_every=5,
                              **self._common("sft")))

    def rl_config(self, algo: str) -> PPOConfig:
        p = self.plan
        return PPOConfig(model=self._model("sft"), data=str(self.data / "prompts-train.jsonl"), reward=REWARD,
                         algo=algo, num_samples=p.rl_samples, batch_size=p.rl_batch,
                         minibatch_size=p.rl_batch * p.rl_samples, max_steps=p.rl_steps, lr=p.rl_lr,
                         kl_coef=p.kl_coef, max_new_tokens=p.max_new_tokens, max_length=32, samples_every=10,
                         guard_window=0, **self._common(algo))

    def rl(self, algo: str) -> None:
        from ..train import ppo

        ppo.run(self.rl_config(algo))

    def evaluate(self, run: str) -> None:
        """`run`'s policy on the held-out problems, with KL to SFT; writes run/eval.json."""
        import torch

        from ..data.formats import read_prompts
        from ..models.load import load_causal_lm, load_tokenizer
        from ..rollout.attention import use_fp32_attention
        from ..runtime import autocast, pick_device
        from .arithmetic_eval import evaluate_accuracy

        p, cfg = self.plan, self.cfg
        device = pick_device(cfg.device)
        tokenizer = load_tokenizer(self._model("sft"))
        reference = load_causal_lm(self._model("sft")).to(device).eval()
        policy = reference if run == "sft" else load_causal_lm(self._model(run)).to(device).eval()
        for model in {id(reference): reference, id(policy): policy}.values():
            use_fp32_attention(model)
        prompts = [r.prompt for r in read_prompts(str(self.data / "prompts-eval.jsonl"))]
        started = time.perf_counter()
        with torch.no_grad():
            result = evaluate_accuracy(policy, reference, tokenizer, prompts, k=p.eval_k, seed=cfg.seed + 7,
                                       max_new_tokens=p.max_new_tokens,
                                       autocast=lambda: autocast(cfg.precision, device))
        result["seconds"] = time.perf_counter() - started
        atomic_write_text(self.out / run / "eval.json", strict_json(result, indent=2) + "\n")
        print(f"{run}: greedy pass@1 {result['greedy_accuracy']:.3f}, sampled pass@1 {result['sampled_accuracy']:.3f}, "
              f"pass@{p.eval_k} {result['pass_at_k']:.3f}, KL to SFT {result['kl_to_ref']:.3f}")

    def report(self) -> None:
        from .arithmetic_report import write_report

        atomic_write_text(self.out / "summary.json", strict_json(self.summary(), indent=2) + "\n")
        write_report(self.out)

    def _entry(self, run: str) -> dict:
        evaluation = _read_json(self.out / run / "eval.json")
        keys = ("greedy_accuracy", "greedy_ci_low", "greedy_ci_high", "sampled_accuracy", "pass_at_k", "kl_to_ref",
                "response_length")
        entry = {"name": run, **{k: evaluation[k] for k in keys}, "dir": run,
                 "wall_s": _read_json(self.out / run / "summary.json")["wall_s"]}
        if run != "sft":
            rl = _read_json(self.out / run / "summary.json")
            entry.update(algo=rl.get("algo"), train_reward=rl.get("reward"))
        return entry

    def summary(self) -> dict:
        p = self.plan
        policies = [self._entry(run) for run in ("sft", *p.algos)]
        sft = policies[0]
        for entry in policies:
            for key in ("greedy_accuracy", "sampled_accuracy", "pass_at_k"):
                entry[f"{key}_vs_sft"] = entry[key] - sft[key]
        steps = [{"name": s.name, "dir": s.dir or s.name, "wall_s": self.timings[s.name]}
                 for s in self.steps() if s.name in self.timings]
        # Steps may have run side by side: the wall time is the time since this run started (plus
        # that of the steps an earlier run finished, on --resume), not the sum of the steps' times.
        resumed = sum(v for k, v in self.timings.items() if k in self.finished_before)
        return {"task": "arithmetic", "quick": self.cfg.quick, "seed": self.cfg.seed, "max_operand": p.max_operand,
                "demonstrations": p.demonstrations, "eval_prompts": p.eval_prompts,
                "k": p.eval_k, "rl_steps": p.rl_steps, "rl_samples": p.rl_samples, "rl_lr": p.rl_lr,
                "reward": REWARD, "policies": policies, "steps": steps,
                "wall_s": time.perf_counter() - self.started + resumed, "steps_s": sum(self.timings.values())}


def _demo(cfg: DemoConfig, plan: ArithmeticPlan | None) -> ArithmeticDemo:
    if not cfg.progress:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # "Loading weights" bars of every model load
    return ArithmeticDemo(cfg, plan)


def _steps(cfg: DemoConfig, plan: ArithmeticPlan | None) -> list[Step]:
    """The demo's steps, made again in a worker process (the runner runs one of them there by name)."""
    return _demo(cfg, plan).steps()


def run(cfg: DemoConfig, plan: ArithmeticPlan | None = None) -> Path:
    demo = _demo(cfg, plan)
    out = demo.out
    run_demo(demo, "rlhf demo arithmetic", functools.partial(_steps, cfg, plan))
    summary = _read_json(out / "summary.json")
    print(f"\nrlhf demo --task arithmetic: finished in {clock(summary['wall_s'])}")
    print(f"  {'policy':<22} {'greedy pass@1':>13} {'sampled pass@1':>14} {'pass@' + str(summary['k']):>7} "
          f"{'KL to SFT':>9}")
    for row in summary["policies"]:
        print(f"  {row['name']:<22} {row['greedy_accuracy']:>13.3f} {row['sampled_accuracy']:>14.3f} "
              f"{row['pass_at_k']:>7.3f} {row['kl_to_ref']:>9.3f}")
    print(f"  report: {out / 'report.html'}")
    return out / "report.html"


def plan_with(plan: ArithmeticPlan, **changes) -> ArithmeticPlan:
    """A copy of `plan` with some sizes changed (the bench's sweeps)."""
    return dataclasses.replace(plan, **changes)
