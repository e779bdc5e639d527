"""Where `rlhf demo`'s time goes: a per-phase, per-kind profile (fp32 unless told otherwise).

    python bench/profile_demo.py --out /tmp/prof                # the full demo, profiled
    python bench/profile_demo.py --out /tmp/prof --scale 0.1    # a tenth of every count, extrapolated
    python bench/profile_demo.py --out /tmp/prof --quick        # the --quick demo

Every demo step is a phase. Inside a phase, wall time is attributed to the outermost of these
kinds that is running: sampling (`rlhf.rollout.generate.generate`), scoring (reward models and
the oracle), forward (a Hugging Face model's forward outside sampling and scoring), backward,
optimiser (any `torch.optim` step), tokenisation (tokenizer encode and decode), load/save (model
and tokenizer files); the rest is Python and data handling ("other"). With `--scale S` every count
of the plan (demonstrations, prompts, labels, steps) is multiplied by S and each phase's time
divided by S, except load/save, which do not grow with the counts.

Prints a table and writes profile.json into --out (with the CPU's name, flags and threads).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu  # noqa: E402

KINDS = ("sampling", "scoring", "forward", "backward", "optimiser", "tokenisation", "load/save", "other")
SCALED_FIELDS = ("demonstrations", "train_prompts", "label_budget", "heldout_pairs", "eval_prompts", "ppo_steps",
                 "group_steps")


class Clock:
    """Wall time per (phase, kind); nested kinds count for the outermost one."""

    def __init__(self):
        self.phase = "startup"
        self.active: str | None = None
        self.totals: dict[str, dict[str, float]] = {}

    def add(self, kind: str, seconds: float) -> None:
        phase = self.totals.setdefault(self.phase, dict.fromkeys(KINDS, 0.0))
        phase[kind] += seconds

    def wrap(self, kind: str, fn):
        clock = self

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if clock.active is not None:
                return fn(*args, **kwargs)
            clock.active, start = kind, time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                clock.active = None
                clock.add(kind, time.perf_counter() - start)

        return timed


def patch(clock: Clock) -> None:
    """Wrap the functions each kind is made of (class attributes, so every instance is timed)."""
    import torch
    import transformers
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    import importlib

    from rlhf.demo import oracle
    from rlhf.models import reward

    generate_module = importlib.import_module("rlhf.rollout.generate")  # the package re-exports a function of that name
    targets = [
        (generate_module, "generate", "sampling"),
        (reward.RewardModel, "score_examples", "scoring"),
        (oracle, "gold_reward", "scoring"),
        (oracle.SentimentOracle, "prefer", "scoring"),
        (PreTrainedModel, "__call__", "forward"),
        (torch.Tensor, "backward", "backward"),
        (PreTrainedTokenizerBase, "__call__", "tokenisation"),
        (PreTrainedTokenizerBase, "encode", "tokenisation"),
        (PreTrainedTokenizerBase, "decode", "tokenisation"),
        (PreTrainedTokenizerBase, "batch_decode", "tokenisation"),
        (PreTrainedModel, "save_pretrained", "load/save"),
        (PreTrainedTokenizerBase, "save_pretrained", "load/save"),
    ]
    originals = {}
    for owner, name, kind in targets:
        original = getattr(owner, name)
        setattr(owner, name, clock.wrap(kind, original))
        if owner in (generate_module, oracle):
            originals[name] = (original, getattr(owner, name))
    for auto in (transformers.AutoModelForCausalLM, transformers.AutoModelForSequenceClassification,
                 transformers.AutoTokenizer):
        auto.from_pretrained = clock.wrap("load/save", auto.from_pretrained)
    for optimiser in (torch.optim.AdamW, torch.optim.Adam, torch.optim.SGD):
        optimiser.step = clock.wrap("optimiser", optimiser.step)
    for module in list(sys.modules.values()):  # modules that imported a timed function by name before the patch
        if not getattr(module, "__name__", "").startswith("rlhf."):
            continue
        for name, (original, timed) in originals.items():
            if getattr(module, name, None) is original:
                setattr(module, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()

    started = time.perf_counter()
    import torch  # noqa: F401  (imports count as startup)

    import rlhf.demo.pipeline as pipeline
    import rlhf.rollout  # noqa: F401
    import rlhf.labelers.generate  # noqa: F401
    import rlhf.train.online_dpo  # noqa: F401
    import rlhf.train.ppo  # noqa: F401
    import rlhf.eval.policy  # noqa: F401
    from rlhf.config import DemoConfig

    clock = Clock()
    clock.add("other", time.perf_counter() - started)
    patch(clock)
    if args.scale != 1.0:
        plan = pipeline.QUICK if args.quick else pipeline.FULL
        scaled = {f: max(1, round(getattr(plan, f) * args.scale)) for f in SCALED_FIELDS if hasattr(plan, f)}
        if args.quick:
            pipeline.QUICK = dataclasses.replace(plan, **scaled)
        else:
            pipeline.FULL = dataclasses.replace(plan, **scaled)

    original_steps = pipeline.Demo.steps  # each step's action runs under its phase name

    def timed_steps(demo):
        steps = original_steps(demo)
        for step in steps:
            def action(step=step, inner=step.action):
                clock.phase = step.name
                begin = time.perf_counter()
                try:
                    inner()
                finally:
                    phase = clock.totals.setdefault(step.name, dict.fromkeys(KINDS, 0.0))
                    phase["other"] += (time.perf_counter() - begin) - sum(v for k, v in phase.items() if k != "other")
            step.action = action
        return steps

    pipeline.Demo.steps = timed_steps
    wall_start = time.perf_counter()
    # One step at a time (workers=1): the clock lives in this process, side-by-side steps run in others.
    pipeline.run(DemoConfig(out=str(Path(args.out) / "demo"), quick=args.quick, precision=args.precision,
                            progress=False, workers=1))
    wall = time.perf_counter() - wall_start + (wall_start - started)

    def extrapolated(phase: str, kinds: dict[str, float]) -> dict[str, float]:
        if args.scale == 1.0 or phase == "startup":
            return dict(kinds)
        return {k: v if k == "load/save" else v / args.scale for k, v in kinds.items()}

    table = {phase: extrapolated(phase, kinds) for phase, kinds in clock.totals.items()}
    report = {"cpu": cpu(), "scale": args.scale, "quick": args.quick, "precision": args.precision,
              "measured_wall_s": wall, "estimated_full_s": sum(sum(k.values()) for k in table.values()),
              "phases": table}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "profile.json").write_text(json.dumps(report, indent=2) + "\n")

    width = max(len(p) for p in table)
    print(f"\n{'phase':<{width}} " + " ".join(f"{k:>12}" for k in KINDS) + f" {'total':>8}")
    totals = dict.fromkeys(KINDS, 0.0)
    for phase, kinds in table.items():
        print(f"{phase:<{width}} " + " ".join(f"{kinds[k]:>12.1f}" for k in KINDS) + f" {sum(kinds.values()):>8.1f}")
        for k in KINDS:
            totals[k] += kinds[k]
    print(f"{'all':<{width}} " + " ".join(f"{totals[k]:>12.1f}" for k in KINDS) + f" {sum(totals.values()):>8.1f}")
    print(f"\nmeasured wall {wall:.1f} s at scale {args.scale}; estimated full {report['estimated_full_s']:.1f} s; "
          f"CPU {report['cpu']}")


if __name__ == "__main__":
    main()
