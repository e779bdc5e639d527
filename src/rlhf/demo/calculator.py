"""The multi-turn example: a policy that learns to use a calculator tool, trained by `rlhf ppo`.

    python -m rlhf.demo.calculator --out runs/calculator            # SFT on tool-use examples, then RL
    python -m rlhf.demo.calculator --model runs/my-sft/model --out runs/calculator-rl --skip-sft

Each episode is a product such as "47*8=". The policy may call the tool, `<calc>47*8</calc>`;
its turn then ends, the environment (`rlhf.rollout.envs.CalculatorEnv`) appends
`<result>376</result>` and the policy continues; a turn without a call is its answer, rewarded 1
when right. The episodes come from a `rlhf.rollout.multiturn.MultiTurnSampler`, the trainer's
sampler seam: `rlhf.train.ppo.run` trains on them as on its own samples (GRPO's or RLOO's
advantages on the episode's return; the environment's tokens are read but carry no loss). The
SFT stage shows the format on a few worked examples, half of them answered without the tool (and
so, for products, mostly wrong): RL has to learn when calling the tool pays.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

from ..config import PPOConfig, SFTConfig
from ..data.files import read_json, write_jsonl
from ..models.load import load_tokenizer
from ..rollout.envs import CALL, CALL_END, CalculatorEnv, Turn
from ..rollout.generate import SamplingConfig
from ..rollout.multiturn import MultiTurnSampler
from ..train import ppo
from ..train.ppo_options import resolve_options
from ..train.ppo_update import ALGORITHMS
from .arithmetic import answer_of, problems, prompt_of

OPERATORS = ("*",)  # products: easy to call the tool for, hard to guess
MAX_TURNS = 3


def tool_demonstrations(n: int, seed: int = 0, max_operand: int = 30) -> list[dict]:
    """`n` worked products for SFT: half call the tool and copy its result, half answer directly."""
    rows = []
    for i, problem in enumerate(problems("train", n, seed, max_operand, OPERATORS)):
        answer = answer_of(problem)
        completion = f"<calc>{problem}</calc><result>{answer}</result>{answer}" if i % 2 == 0 else answer
        rows.append({"prompt": prompt_of(problem), "completion": completion})
    return rows


def tool_sampler(cfg: PPOConfig, env=None, max_turns: int = MAX_TURNS) -> MultiTurnSampler:
    """Episodes of cfg.model against `env` (default: the calculator), k per prompt as --algo asks,
    at most `max_turns` policy turns of cfg.max_new_tokens tokens each; the step's metrics gain
    tool_call_rate (share of episodes with at least one call), turns and episodes_ended."""
    if ALGORITHMS[cfg.algo].uses_critic:
        raise ValueError("the multi-turn example trains critic-free algorithms (grpo, rloo, reinforce), not ppo")
    opts = resolve_options(cfg)
    if opts.dynamic_sampling:
        raise ValueError(f"--algo {cfg.algo}: dynamic sampling is not supported by the multi-turn example; use "
                         "--algo grpo (with --clip-high for DAPO's clip-higher) without --dynamic-sampling")
    return MultiTurnSampler(load_tokenizer(cfg.model, cfg.trust_remote_code), env or CalculatorEnv(),
                            SamplingConfig(cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p), opts.k,
                            cfg.seed, max_turns, (CALL_END,), cfg.max_length - cfg.max_new_tokens, cfg.precision,
                            episode_stats=tool_calls)


def train(cfg: PPOConfig, env=None, max_turns: int = MAX_TURNS) -> Path:
    """Multi-turn RL of cfg.model on cfg.data's prompts against `env` (default: the calculator):
    `rlhf ppo` with the episodes of `tool_sampler` (cfg.reward is not read: the environment
    rewards). Writes the run directory of `rlhf ppo`; returns its model/."""
    return ppo.run(cfg, sampler=tool_sampler(cfg, env, max_turns))


def tool_calls(history: list[Turn]) -> dict:
    """tool_call_rate of one episode: 1 when the policy called the tool at least once."""
    return {"tool_call_rate": float(any(t.role == "policy" and CALL.search(t.text) for t in history))}


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
    lines = (out / "rl" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    first, last = json.loads(lines[0]), json.loads(lines[-1])
    summary = read_json(out / "rl" / "summary.json")
    print(f"reward {first['reward']:.3f} -> {last['reward']:.3f}, tool calls "
          f"{first['tool_call_rate']:.2f} -> {last['tool_call_rate']:.2f} of episodes "
          f"({summary['steps']} steps, {summary['wall_s']:.0f} s); samples in {out / 'rl' / 'samples.jsonl'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
