"""Over-optimisation: proxy and gold reward along long `rlhf ppo` runs, with the guard's warnings.

    python bench/overopt.py RUN_DIR [RUN_DIR ...] [--names single,ensemble] [--window 5]
                            [--out docs/overoptimisation.png]

Each RUN_DIR is an `rlhf ppo` run trained with `--gold` (its metrics.jsonl holds `reward`, the
proxy the policy optimises, and `gold`, the reward it should have optimised). For each run this
prints where the gold reward peaks (the step of the highest moving average over --window rollout
steps) and whether it then falls by more than --tolerance while the proxy may still rise, the guard's first warning (from
summary.json, or from the `guard/warnings` counter of metrics.jsonl for a run still going), and the
proxy, gold, KL and EOS share at the peak and at the end; and draws gold and proxy against the
step, one colour per run, the guard's first warning and the gold peak marked.

The README's figure comes from (demo base from `rlhf demo` steps data, sft, labels, rm):

    head -250 runs/demo/data/pairs-train.jsonl > pairs-250.jsonl      # a small-data proxy, as in Gao et al. 2023
    rlhf rm --config runs/demo/rm/config.yaml --data pairs-250.jsonl --epochs 2 --out runs/rm250
    rlhf rm --config runs/demo/rm/config.yaml --data pairs-250.jsonl --epochs 2 --out runs/rm250-ens3 --ensemble 3
    PPO="--model runs/demo/sft/model --data runs/demo/data/prompts-train.jsonl --gold rlhf.demo.oracle:gold_reward
         --max-new-tokens 48 --max-length 128 --batch-size 32 --minibatch-size 32 --update-epochs 4 --lr 5e-5
         --kl-coef 0.01 --max-steps 80"
    rlhf ppo $PPO --reward runs/rm250/model --out runs/ppo250-single
    rlhf ppo $PPO --reward runs/rm250-ens3/model --reward-aggregate mean-minus-std --out runs/ppo250-ens
    python bench/overopt.py runs/ppo250-single runs/ppo250-ens --names "single RM,ensemble mean-std"

The arithmetic figure (docs/overoptimisation-arithmetic.png; from `rlhf demo --task arithmetic`'s
SFT policy, a proxy reward model trained on the policy's own right and wrong answers, exact match
as the gold):

    rlhf generate --model runs/arith/sft/model --data runs/arith/data/prompts-train.jsonl --num-samples 8 \
        --max-new-tokens 6 --max-length 32 --label rlhf.demo.arithmetic:correctness_reward --seed 1 --out k8.jsonl
    rlhf generate ... --num-samples 4 --seed 0 --out k4.jsonl        # the same otherwise
    cat k8.jsonl > rm-train.jsonl; head -300 k4.jsonl >> rm-train.jsonl; tail -107 k4.jsonl > rm-val.jsonl
    RM="--model runs/arith/sft/model --data rm-train.jsonl --eval-data rm-val.jsonl --epochs 2 --lr 1e-4
        --max-length 32 --batch-size 16 --head-init probe"
    rlhf rm $RM --out runs/arith-rm
    rlhf rm $RM --out runs/arith-rm-ens3 --ensemble 3
    PPO="--model runs/arith/sft/model --data runs/arith/data/prompts-train.jsonl --gold rlhf.rewards.verifiable:exact_match
         --max-new-tokens 6 --max-length 32 --batch-size 64 --minibatch-size 64 --update-epochs 4 --lr 5e-5
         --kl-coef 0.01 --max-steps 150"
    rlhf ppo $PPO --reward runs/arith-rm/model --out runs/arith-ppo-single
    rlhf ppo $PPO --reward runs/arith-rm-ens3/model --reward-aggregate mean-minus-std --out runs/arith-ppo-ens
    python bench/overopt.py runs/arith-ppo-single runs/arith-ppo-ens --names "single RM,ensemble mean-std" \
        --gold-name "exact match" --out docs/overoptimisation-arithmetic.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_run(run: Path) -> dict:
    """{"steps", "proxy", "gold", "kl", "eos", "first_warning": (step, signal) | None} of one run."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
    rows = [r for r in rows if "gold" in r and "reward" in r]
    if not rows:
        raise SystemExit(f"{run}: metrics.jsonl has no rows with both `reward` and `gold` (train with --gold)")
    first = None
    summary = run / "summary.json"
    if summary.exists():
        warnings = (json.loads(summary.read_text(encoding="utf-8")).get("guard") or {}).get("warnings") or []
        first = (warnings[0]["step"], warnings[0]["signal"]) if warnings else None
    if first is None:
        first = next(((r["step"], "guard") for r in rows if r.get("guard/warnings", 0) > 0), None)
    return {"steps": [r["step"] for r in rows], "proxy": [r["reward"] for r in rows], "gold": [r["gold"] for r in rows],
            "kl": [r["kl"] for r in rows], "eos": [r.get("eos_rate", float("nan")) for r in rows], "first_warning": first}


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to `window` values (the first ones average what there is)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def gold_peak(run: dict, window: int) -> int:
    """Index of the highest moving-average gold reward (the last index when gold never falls)."""
    smooth = moving_average(run["gold"], window)
    return max(range(len(smooth)), key=lambda i: (smooth[i], -i))


def describe(name: str, run: dict, window: int, tolerance: float) -> str:
    peak = gold_peak(run, window)
    smooth_gold, smooth_proxy = moving_average(run["gold"], window), moving_average(run["proxy"], window)
    warning = f"step {run['first_warning'][0]} ({run['first_warning'][1]})" if run["first_warning"] else "none"
    fell = smooth_gold[peak] - smooth_gold[-1]
    falls = (f"after step {run['steps'][peak]} (by {fell:.3f})" if fell > tolerance
             else f"no (end within {tolerance} of its peak)")
    return (f"| {name} | {run['steps'][-1]} | {falls} | {warning} | {smooth_proxy[peak]:.2f} -> {smooth_proxy[-1]:.2f} | "
            f"{smooth_gold[peak]:.3f} -> {smooth_gold[-1]:.3f} | {run['kl'][peak]:.1f} -> {run['kl'][-1]:.1f} | "
            f"{run['eos'][peak]:.2f} -> {run['eos'][-1]:.2f} |")


def plot(runs: dict[str, dict], window: int, tolerance: float, out: Path, gold_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_gold, ax_proxy) = plt.subplots(1, 2, figsize=(11, 4))
    for (name, run), colour in zip(runs.items(), ("tab:red", "tab:blue", "tab:green", "tab:purple")):
        ax_gold.plot(run["steps"], run["gold"], color=colour, alpha=0.25)
        ax_gold.plot(run["steps"], moving_average(run["gold"], window), color=colour, label=name)
        ax_proxy.plot(run["steps"], moving_average(run["proxy"], window), color=colour, label=name)
        peak, smooth = gold_peak(run, window), moving_average(run["gold"], window)
        if smooth[peak] - smooth[-1] > tolerance:
            ax_gold.axvline(run["steps"][peak], color=colour, linestyle=":", linewidth=1)
        if run["first_warning"]:
            for ax in (ax_gold, ax_proxy):
                ax.axvline(run["first_warning"][0], color=colour, linestyle="--", linewidth=1)
    ax_gold.set(title=f"gold reward ({gold_name}), moving average of {window}", xlabel="rollout step")
    ax_proxy.set(title="proxy reward the policy optimises (own scale per run)", xlabel="rollout step")
    ax_gold.legend(loc="lower right", title="dotted: gold peak before a fall, dashed: guard's first warning", fontsize=8, title_fontsize=8)
    ax_proxy.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--names", default=None, help="comma-separated names, one per run (default: the directory names)")
    parser.add_argument("--window", type=int, default=5, help="rollout steps in the moving average")
    parser.add_argument("--tolerance", type=float, default=0.03,
                        help="gold falls when its moving average ends more than this below its peak")
    parser.add_argument("--out", type=Path, default=Path("docs/overoptimisation.png"))
    parser.add_argument("--gold-name", default="noiseless oracle", help="what the gold reward is, for the figure")
    args = parser.parse_args(argv)
    names = args.names.split(",") if args.names else [r.name for r in args.runs]
    if len(names) != len(args.runs):
        parser.error(f"{len(names)} names for {len(args.runs)} runs")
    runs = {name: read_run(run) for name, run in zip(names, args.runs)}
    print("| run | steps | gold falls | guard's first warning | proxy (peak -> end) | gold (peak -> end) | "
          "KL (peak -> end) | EOS share (peak -> end) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, run in runs.items():
        print(describe(name, run, args.window, args.tolerance))
    plot(runs, args.window, args.tolerance, args.out, args.gold_name)
    print(f"\nfigure: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
