"""The multi-turn example: a policy that learns to use a calculator tool, trained with the update of `rlhf ppo`.

    python -m rlhf.demo.calculator --out runs/calculator            # SFT on tool-use examples, then RL
    python -m rlhf.demo.calculator --model runs/my-sft/model --out runs/calculator-rl --skip-sft

Each episode is a product such as "47*8=". The policy may call the tool, `<calc>47*8</calc>`;
its turn then ends, the environment (`rlhf.rollout.envs.CalculatorEnv`) appends
`<result>376</result>` and the policy continues; a turn without a call is its answer, rewarded 1
when right. Rollouts are `rlhf.rollout.multiturn.rollout` records: the environment's tokens are
in the attention mask but out of the loss mask, so the ordinary update
(`rlhf.train.ppo_update.update`, with GRPO's or RLOO's advantages from its ALGORITHMS table)
trains on the policy's own tokens only. The SFT stage shows the format on a few worked examples,
half of them answered without the tool (and so, for products, mostly wrong): RL has to learn
when calling the tool pays.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import runtime
from ..algos import kl_estimate
from ..config import PPOConfig, SFTConfig
from ..data.files import read_json, write_jsonl
from ..data.formats import read_prompts
from ..models.load import load_policy, save_pretrained
from ..models.reward import disable_dropout
from ..rollout.attention import use_fp32_attention
from ..rollout.envs import CALL, CALL_END, CalculatorEnv
from ..rollout.generate import SamplingConfig
from ..rollout.logprobs import response_logprobs
from ..rollout.multiturn import MultiTurnRollout, rollout
from ..runtime.files import dumps as strict_json
from ..train import loop
from ..train.ppo import build_reference, reference_logprobs, single_update_step
from ..train.ppo_options import resolve_options
from ..train.ppo_update import ALGORITHMS, Experience, rollout_stats, update
from .arithmetic import answer_of, problems, prompt_of

OPERATORS = ("*",)  # products: easy to call the tool for, hard to guess
MAX_TURNS = 3


@dataclass
class MultiTurnExperience(Experience):
    """An Experience over a MultiTurnRollout: minibatches keep the rollout's attention mask."""

    def rows(self, index: torch.Tensor) -> "MultiTurnExperience":
        sub = super().rows(index)  # every field of Experience indexed, the rollout as a plain Rollout
        fields = {f.name: getattr(sub, f.name) for f in dataclasses.fields(sub)}
        return MultiTurnExperience(**{**fields, "rollout": self.rollout.rows(index)})


def tool_demonstrations(n: int, seed: int = 0, max_operand: int = 30) -> list[dict]:
    """`n` worked products for SFT: half call the tool and copy its result, half answer directly."""
    rows = []
    for i, problem in enumerate(problems("train", n, seed, max_operand, OPERATORS)):
        answer = answer_of(problem)
        completion = f"<calc>{problem}</calc><result>{answer}</result>{answer}" if i % 2 == 0 else answer
        rows.append({"prompt": prompt_of(problem), "completion": completion})
    return rows


def train(cfg: PPOConfig, env=None, max_turns: int = MAX_TURNS) -> Path:
    """Multi-turn RL of cfg.model on cfg.data's prompts against `env` (default: the calculator).

    Uses PPOConfig's fields (algo rloo, grpo or reinforce; num_samples, batch_size, lr,
    max_new_tokens per turn, temperature, kl_coef, ...); cfg.reward is not read: the environment
    gives the reward. Writes the run directory of `rlhf ppo` (config.yaml, metrics.jsonl with
    reward, tool_call_rate and turns, summary.json, model/)."""
    if ALGORITHMS[cfg.algo].uses_critic:
        raise ValueError("the multi-turn example trains critic-free algorithms (grpo, rloo, reinforce), not ppo")
    opts = resolve_options(cfg)
    if opts.dynamic_sampling:
        raise ValueError(f"--algo {cfg.algo}: dynamic sampling is not supported by the multi-turn example; use "
                         "--algo grpo (with --clip-high for DAPO's clip-higher) without --dynamic-sampling")
    env = env or CalculatorEnv()
    t_start = time.perf_counter()
    runtime.seed_everything(cfg.seed)
    device = runtime.pick_device(cfg.device)
    run_dir = runtime.RunDir(cfg)
    autocast = lambda: runtime.autocast(cfg.precision, device)  # noqa: E731
    sampling = SamplingConfig(cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p)
    prompts = [p.prompt for p in read_prompts(cfg.data)]
    plan = loop.BatchPlan(len(prompts), cfg.batch_size, cfg.seed)
    total = cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(cfg.epochs * plan.per_epoch))
    actor, tokenizer = load_policy(cfg, device)
    disable_dropout(actor)
    reference = build_reference(cfg, device)
    for model in (actor, reference):
        if model is not None:
            use_fp32_attention(model)
    updates = opts.epochs * math.ceil(cfg.batch_size * opts.k / opts.minibatch_size)
    optimizer = loop.make_optimizer(actor, cfg)
    schedulers = [loop.make_scheduler(optimizer, cfg.warmup_steps, total * updates, cfg.min_lr_ratio)]
    guard = runtime.NonFiniteGuard(cfg.max_bad_steps, "optimiser step")
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    kl_coef, t0, first, last = cfg.kl_coef, time.perf_counter(), None, {}
    actor.train()
    for step in range(total):
        step_t = time.perf_counter()
        batch = [prompts[i] for i in plan.micro_batch(step)]
        record = rollout(actor, tokenizer, [p for p in batch for _ in range(opts.k)], env, sampling, max_turns,
                         (CALL_END,), generator, autocast, cfg.max_length - cfg.max_new_tokens)
        with torch.no_grad(), autocast():
            ref_logp = reference_logprobs(reference, actor, record, opts.temperature).float()
            old_logp = entropy = None
            if opts.kl_in_reward or not single_update_step(cfg, opts):  # else the update's forward is pi_old
                old_logp, entropy = response_logprobs(actor, record, opts.temperature, with_entropy=True)
        exp = MultiTurnExperience(record, old_logp, ref_logp, None, record.reward, entropy)

        def advantages_of(exp: Experience) -> tuple:
            kl = kl_estimate(exp.old_logp, exp.ref_logp, opts.kl_estimator) if opts.kl_in_reward else None
            return ALGORITHMS[cfg.algo].advantages(exp, kl, kl_coef, opts)

        stats, advantages, _ = update(actor, None, exp, advantages_of(exp)[0], None, kl_coef, optimizer, None,
                                      schedulers, opts, autocast, torch.Generator().manual_seed(cfg.seed + step),
                                      guard=guard, step=step + 1)
        kl_by_kind = {kind: kl_estimate(exp.old_logp, exp.ref_logp, kind) for kind in ("k1", "k2", "k3")}
        last = {"step": step + 1, "loss": stats["policy_loss"] + kl_coef * stats.get("kl_loss", 0.0),
                "lr": schedulers[0].get_last_lr()[0], "elapsed_s": time.perf_counter() - t0,
                "tokens_per_s": float(record.response_mask.sum()) / (time.perf_counter() - step_t),
                **episode_stats(record), **rollout_stats(exp, kl_by_kind, advantages, None), **stats}
        first = first or last
        run_dir.log(last)
        if cfg.samples_every and (step + 1) % cfg.samples_every == 0:
            with open(run_dir.samples_path, "a", encoding="utf-8") as f:
                for history, reward in list(zip(record.histories, record.reward.tolist()))[:4]:
                    f.write(strict_json({"step": step + 1, "reward": reward,
                                         "turns": [{"role": t.role, "text": t.text} for t in history]}) + "\n")
    model_dir = save_pretrained(actor, tokenizer, run_dir.model_dir)
    run_dir.write_summary({
        "stage": "ppo", "algo": cfg.algo, "environment": type(env).__name__, "steps": total,
        "samples_per_prompt": opts.k, "max_turns": max_turns,
        "first_reward": first["reward"] if first else None, "first_tool_call_rate": first["tool_call_rate"] if first else None,
        **{k: last.get(k) for k in ("reward", "tool_call_rate", "turns", "kl_k3", "entropy")},
        "skipped_steps": guard.skipped, "wall_s": time.perf_counter() - t_start,
    })
    return model_dir


def episode_stats(record: MultiTurnRollout) -> dict:
    """reward (mean episode return), tool_call_rate (share of episodes with at least one call),
    turns (mean policy turns), ended (share the environment finished)."""
    calls = [any(t.role == "policy" and CALL.search(t.text) for t in h) for h in record.histories]
    return {"reward": float(record.reward.mean()), "tool_call_rate": sum(calls) / len(calls),
            "turns": float(record.turns.float().mean()), "episodes_ended": float(record.ended.float().mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf.demo.calculator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/calculator", help="directory: data/, sft/ and rl/ run directories")
    parser.add_argument("--model", default=None, help="model to start from (default: the shipped base model)")
    parser.add_argument("--skip-sft", action="store_true", help="--model already knows the tool format")
    parser.add_argument("--sft-examples", type=int, default=512, help="worked SFT examples (half use the tool)")
    parser.add_argument("--steps", type=int, default=30, help="RL steps")
    parser.add_argument("--algo", default="grpo", choices=[a for a in ALGORITHMS if not ALGORITHMS[a].uses_critic])
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    data = out / "data"
    write_jsonl(data / "prompts.jsonl",
                [{"prompt": prompt_of(p)} for p in problems("train", 256, args.seed + 1, 30, OPERATORS)])
    model = args.model
    if not args.skip_sft:
        from ..resources import BASE_MODEL
        from ..train import sft

        write_jsonl(data / "sft.jsonl", tool_demonstrations(args.sft_examples, args.seed))
        with contextlib.redirect_stdout(io.StringIO()):
            model = str(sft.run(SFTConfig(model=model or str(BASE_MODEL), data=str(data / "sft.jsonl"),
                                          out=str(out / "sft"), epochs=3, lr=1e-3, batch_size=16, max_length=64,
                                          seed=args.seed, save_every=0, progress=False)))
    if model is None:
        raise SystemExit("--skip-sft needs --model")
    train(PPOConfig(model=model, data=str(data / "prompts.jsonl"), out=str(out / "rl"), algo=args.algo, num_samples=8,
                    batch_size=8, minibatch_size=64, lr=args.lr, max_steps=args.steps, max_new_tokens=16,
                    max_length=96, kl_coef=0.01, seed=args.seed, save_every=0, progress=False, samples_every=5))
    summary = read_json(out / "rl" / "summary.json")
    print(f"reward {summary['first_reward']:.3f} -> {summary['reward']:.3f}, tool calls "
          f"{summary['first_tool_call_rate']:.2f} -> {summary['tool_call_rate']:.2f} of episodes "
          f"({summary['steps']} steps, {summary['wall_s']:.0f} s); samples in {out / 'rl' / 'samples.jsonl'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
