"""Two rounds of deploy, collect, retrain on the demo task, with the scripted oracle as the users.

    python examples/iterate_demo.py --out runs/iterate-demo            # builds the demo's SFT policy first
    python examples/iterate_demo.py --out runs/iterate-demo --demo runs/demo   # or starts from a demo run

Round 0 is the demo's SFT policy and reward model (`rlhf demo` steps data, sft, labels, rm; with
--quick sizes unless --demo names a finished demo). Each round then:

1. the current policy writes two continuations of --pairs story openings it has not seen (what a
   deployed model answers its users);
2. the oracle (VADER positivity with Bradley-Terry noise, like a person) picks one of each pair,
   recorded in a SQLite feedback store through the store's own functions: most as labels in the
   labelling app's project `story`, a quarter as the chat page records a regenerate-and-pick
   (project `story-pairs`, the conversation as the prompt);
3. `rlhf iterate --from <current round> --project story` exports the labels since the last round,
   warm-starts the reward model on them, runs PPO from the current policy against it, and judges
   the new policy against the current one on 128 held-out openings by the noiseless oracle (the
   gold win rate, with its 95% interval).

Prints one line per round and writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path

from rlhf.config import DemoConfig, GenerateConfig, IterateConfig
from rlhf.demo.oracle import SentimentOracle
from rlhf.demo.pipeline import Demo
from rlhf.demo.tasks import story_prompts
from rlhf.feedback import repo
from rlhf.feedback.store import open_store
from rlhf.iterate import round as iterate
from rlhf.labelers import generate

GOLD = "rlhf.demo.oracle:gold_reward"


def demo_round_zero(out: Path, demo_dir: str | None) -> Path:
    """A demo directory with sft/model, rm/model: --demo, or the demo's first steps (quick sizes)."""
    if demo_dir:
        return Path(demo_dir)
    demo = Demo(DemoConfig(out=str(out / "demo"), quick=True, progress=False, resume=(out / "demo").exists()))
    demo.out.mkdir(parents=True, exist_ok=True)
    for step in (demo.make_data, demo.sft, demo.label, demo.reward_model):
        step()
    return demo.out


def write_prompts(path: Path, prompts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts), encoding="utf-8")
    return path


def users_give_feedback(db: str, policy: Path, prompts: list[str], workdir: Path, seed: int) -> int:
    """The policy answers each prompt twice; the oracle picks one, recorded as the app and the chat page do."""
    candidates = workdir / "candidates.jsonl"
    generate.run(GenerateConfig(model=str(policy), data=str(write_prompts(workdir / "prompts.jsonl", prompts)),
                                out=str(candidates), num_samples=2, max_new_tokens=48, max_length=128, seed=seed))
    rows = [json.loads(line) for line in candidates.read_text(encoding="utf-8").splitlines()]
    oracle = SentimentOracle(temperature=0.1, seed=seed)
    picks = oracle.prefer([r["prompt"] for r in rows], [r["responses"][0] for r in rows], [r["responses"][1] for r in rows])
    with open_store(db)() as s:
        for n, (row, pick) in enumerate(zip(rows, picks)):
            chat = n % 4 == 3  # a quarter of the votes come from the chat page's regenerate
            name, who = ("story-pairs", "chat") if chat else ("story", "oracle-annotator")
            project = repo.project_by_name(s, name) or repo.create_project(s, name, "pairwise")
            annotator = repo.annotator_by_name(s, project, who, create=True)
            prompt = [{"role": "user", "content": row["prompt"]}] if chat else row["prompt"]
            ids = repo.add_prompt(s, project, prompt, [(text, str(policy)) for text in row["responses"]])
            task = repo.add_task(s, project, ids)
            s.commit()
            repo.save_label(s, annotator, task, uuid.uuid4().hex, outcome="win", winner_id=ids[pick], strength=2)
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/iterate-demo")
    parser.add_argument("--demo", default=None, help="a finished `rlhf demo` directory to start from")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=192, help="oracle-labelled pairs per round")
    parser.add_argument("--method", default="rm+ppo", choices=["rm+ppo", "dpo"])
    parser.add_argument("--rl-steps", type=int, default=20)
    parser.add_argument("--kl-coef", type=float, default=0.02)
    parser.add_argument("--eval-prompts", type=int, default=128)
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    current = demo_round_zero(out, args.demo)
    db = str(out / "feedback.db")
    held_out = write_prompts(out / "prompts-eval.jsonl", [p.prompt for p in story_prompts("test", args.eval_prompts, seed=11)])
    openings = [p.prompt for p in story_prompts("train", args.pairs * args.rounds, seed=5)]
    results = []
    for r in range(1, args.rounds + 1):
        policy = current / "sft" / "model" if r == 1 else current / "policy"
        began = time.perf_counter()
        n = users_give_feedback(db, policy, openings[(r - 1) * args.pairs: r * args.pairs], out / f"users-{r}", seed=r)
        iterate.run(IterateConfig(from_run=str(current), project="story", db=db, out=str(out / f"round{r}"),
                                  method=args.method, eval_data=str(held_out), judge=GOLD, rl_steps=args.rl_steps,
                                  kl_coef=args.kl_coef, rm_epochs=2.0, eval_prompts=args.eval_prompts, seed=r,
                                  progress=False))
        lineage = json.loads((out / f"round{r}" / "lineage.json").read_text(encoding="utf-8"))
        e = lineage["eval"]
        results.append({"round": r, "pairs_labelled": n, "labels_read": lineage["labels"]["read"],
                        "comparisons": lineage["labels"]["comparisons"], "sources": lineage["labels"]["sources"],
                        "gold_win_rate_vs_previous": e["win_rate"], "ci_low": e["ci_low"], "ci_high": e["ci_high"],
                        "gold_reward": e["policy_score"], "previous_gold_reward": e["reference_score"],
                        "kl_to_previous": e["kl_to_parent"], "wall_s": time.perf_counter() - began})
        print(f"round {r}: {n} pairs labelled; gold win rate vs round {r - 1}: {e['win_rate']:.3f} "
              f"[{e['ci_low']:.3f}, {e['ci_high']:.3f}]; gold reward {e['reference_score']:.3f} -> "
              f"{e['policy_score']:.3f}; KL {e['kl_to_parent']:.2f}; {results[-1]['wall_s']:.0f} s", flush=True)
        current = out / f"round{r}"
    summary = {"rounds": results, "method": args.method, "pairs_per_round": args.pairs,
               "wall_s": time.perf_counter() - start}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"done in {summary['wall_s']:.0f} s: {out / 'results.json'}")


if __name__ == "__main__":
    main()
