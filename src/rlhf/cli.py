"""`rlhf <command> ...`: parse the stage's config, then import the stage lazily and run it.

Configs are frozen dataclasses (rlhf.config); `--config FILE.yaml` supplies field values and
flags override them. `rlhf <command> --help` lists every field with its default and meaning.
"""

from __future__ import annotations

import importlib
import sys

# command -> (config class name in rlhf.config, module whose run(cfg) executes it)
COMMANDS = {
    "demo": ("DemoConfig", "rlhf.demo.pipeline", "the whole loop on the embedded default: SFT, oracle labels, RM, PPO/RLOO/GRPO/DPO, eval, report.html"),
    "pretrain": ("PretrainConfig", "rlhf.train.pretrain", "pretrain or continue pretraining a causal LM on a corpus"),
    "sft": ("SFTConfig", "rlhf.train.sft", "supervised fine-tuning on demonstrations (loss on completions only)"),
    "dpo": ("DPOConfig", "rlhf.train.dpo", "direct alignment: --loss dpo|cdpo|ipo|simpo|orpo|kto on preferences; --online"),
    "rm": ("RewardConfig", "rlhf.train.reward", "reward model on comparisons (Bradley-Terry, optional margin) and rankings (Plackett-Luce)"),
    "eval rm": ("EvalRMConfig", "rlhf.eval.reward", "reward-model accuracy, margin, calibration and accuracy by prompt length on comparisons"),
    "ppo": ("PPOConfig", "rlhf.train.ppo", "online RL from a reward model or scorer: --algo ppo|rloo|grpo|reinforce"),
    "generate": ("GenerateConfig", "rlhf.train.generate", "sample candidate responses to label; --label oracle|SCORER writes comparisons"),
    "eval": ("EvalPolicyConfig", "rlhf.eval.policy", "same as `rlhf eval policy`"),
    "eval policy": ("EvalPolicyConfig", "rlhf.eval.policy", "win rate of a policy against a reference (judged by a scorer) and KL to it"),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {info[2]}" for name, info in COMMANDS.items())
    return f"usage: rlhf <command> [--config FILE.yaml] [--field value ...]\n\ncommands:\n{rows}\n\nrlhf <command> --help lists every option."


def parse(command: str, argv: list[str]):
    """The stage's config from an optional YAML file and command-line flags (flags win)."""
    import dataclasses

    import tyro

    from . import config

    cls = getattr(config, COMMANDS[command][0])
    config_file = None
    rest: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--config":
            if i + 1 >= len(argv):
                raise SystemExit("--config needs a file name")
            config_file, i = argv[i + 1], i + 2
        elif argv[i].startswith("--config="):
            config_file, i = argv[i].split("=", 1)[1], i + 1
        else:
            rest.append(argv[i])
            i += 1
    defaults = None
    if config_file:
        defaults = dataclasses.replace(cls(), **config.load_yaml(config_file, cls))
    return tyro.cli(cls, args=rest, default=defaults, prog=f"rlhf {command}", description=cls.__doc__)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if " ".join(argv[:2]) in COMMANDS:  # two-word commands: `rlhf eval rm ...`
        command, rest = " ".join(argv[:2]), argv[2:]
    if command not in COMMANDS:
        print(f"rlhf: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        cfg = parse(command, rest)
    except ValueError as err:  # a config that fails validation
        print(f"rlhf {command}: {err}", file=sys.stderr)
        return 2
    stage = importlib.import_module(COMMANDS[command][1])
    try:
        out = stage.run(cfg)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        # Bad input (data rows, model directories, run directories) is the user's to fix: no traceback.
        print(f"rlhf {command}: error: {err}", file=sys.stderr)
        return 1
    print(f"rlhf {command}: done -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
