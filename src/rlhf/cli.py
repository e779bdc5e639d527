"""`rlhf <command> ...`: parse the stage's config, then import the stage lazily and run it.

Configs are frozen dataclasses (rlhf.config); `--config FILE.yaml` supplies field values and
flags override them. `rlhf <command> --help` lists every field with its default and meaning.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import sys
from pathlib import Path

# command -> (config class name in rlhf.config, module whose run(cfg) executes it)
COMMANDS = {
    "demo": ("DemoConfig", "rlhf.demo.pipeline", "the whole loop on the embedded default: SFT, oracle labels, RM, PPO/RLOO/GRPO/DPO, eval, report.html"),
    "pretrain": ("PretrainConfig", "rlhf.train.pretrain", "pretrain or continue pretraining a causal LM on a corpus"),
    "sft": ("SFTConfig", "rlhf.train.sft", "supervised fine-tuning on demonstrations (loss on completions only)"),
    "dpo": ("DPOConfig", "rlhf.train.dpo", "direct alignment: --loss dpo|cdpo|ipo|simpo|orpo|kto on preferences; --online"),
    "rm": ("RewardConfig", "rlhf.train.reward", "reward model on comparisons (Bradley-Terry, optional margin) and rankings (Plackett-Luce)"),
    "eval rm": ("EvalRMConfig", "rlhf.eval.reward", "reward-model accuracy, margin, calibration and accuracy by prompt length on comparisons"),
    "ppo": ("PPOConfig", "rlhf.train.ppo", "online RL from a reward model or scorer: --algo ppo|rloo|grpo|reinforce|reinforce++|reinforce++-baseline, presets dapo|dr-grpo|gspo"),
    "generate": ("GenerateConfig", "rlhf.labelers.generate", "sample candidate responses to label; --label oracle|SCORER writes comparisons"),
    "eval": ("EvalPolicyConfig", "rlhf.eval.policy", "same as `rlhf eval policy`"),
    "eval policy": ("EvalPolicyConfig", "rlhf.eval.policy", "win rate of a policy against a reference (judged by a scorer) and KL to it"),
    "label serve": ("LabelServeConfig", "rlhf.feedback.serve", "the human-feedback labelling web app (pairwise with strength, rankings, thumbs; dashboard)"),
    "label import": ("LabelImportConfig", "rlhf.feedback.importer", "tasks from `rlhf generate` output or labelled files into a labelling project"),
    "label invite": ("LabelInviteConfig", "rlhf.feedback.chat_access", "a personal sign-in link, shown once: to a labelling project, or with --chat to the chat page of `rlhf serve --db`"),
    "label export": ("LabelExportConfig", "rlhf.feedback.export", "a labelling project's labels as comparisons, rankings or binary feedback for rm/dpo/kto"),
    "label backup": ("LabelBackupConfig", "rlhf.feedback.backup", "a consistent copy of the label store while it serves (SQLite backup API, or pg_dump), checked table by table"),
    "label monitor": ("LabelMonitorConfig", "rlhf.feedback.monitor", "what users think of each served model version: thumbs-up with intervals, arena, regenerations; alert when the newest is worse"),
    "label stats": ("LabelStatsConfig", "rlhf.feedback.overview", "one line per labelling project; --by-model: per served model version, as `label monitor`"),
    "label restore": ("LabelRestoreConfig", "rlhf.feedback.backup", "a label store from a `label backup` file, checked table by table"),
    "judge": ("JudgeConfig", "rlhf.labelers.judge_command", "AI preferences: a local model or OpenAI-compatible endpoint judges pairs in both orders (flips = ties), cached"),
    "judge revise": ("JudgeReviseConfig", "rlhf.labelers.judge_command", "Constitutional AI: critique and revise responses against a constitution -> SFT demonstrations (--pairs: comparisons)"),
    "serve": ("ServeConfig", "rlhf.serve.server", "OpenAI-compatible HTTP API on trained policies (/v1/chat/completions, streaming), continuous batching"),
    "iterate": ("IterateConfig", "rlhf.iterate.round", "the next round from the feedback collected since the last: reward model + RL or DPO, eval vs the current policy, lineage"),
    # No config class of its own: `rlhf doctor STAGE ...` parses STAGE's config (see _doctor).
    "doctor": (None, "rlhf.doctor", "preflight of `rlhf sft|rm|dpo|ppo` with the same flags: batch arithmetic, cut prompts, round trip, PPO at lr 0, time, memory, resume"),
    # No config either: `rlhf report RUN_DIR` (see _report).
    "report": (None, "rlhf.eval.run_report", "RUN_DIR/report.html for any run or demo directory: curves, over-optimisation guard, samples, config"),
}

# Packages whose import registers plug-ins that lower layers find by name (rlhf.demo: the labeler
# `oracle`, in rlhf.labelers.registry): imported before every command. Each must stay light
# (no torch), since the torch-free commands (`rlhf label ...`) import it too.
PLUGINS = ("rlhf.demo",)

# Commands that run data-parallel under `torchrun` / `accelerate launch` (the supervised loop,
# `rlhf.train.loop.fit`, and the online RL loop of `rlhf ppo`, rlhf.train.ppo_dist); the others
# refuse to start as one of several processes.
DATA_PARALLEL = frozenset({"pretrain", "sft", "rm", "dpo", "ppo"})


def fresh_run_dir(command: str, cfg) -> str | None:
    """The run directory of a training command when it does not exist yet or is empty: a run that
    then fails before writing anything but config.yaml removes it (`discard_unstarted`)."""
    if command not in DATA_PARALLEL or not getattr(cfg, "out", None):
        return None
    out = Path(cfg.out)
    return str(out) if not out.exists() or (out.is_dir() and not any(out.iterdir())) else None


def discard_unstarted(path: str | None) -> None:
    """Remove `path` (from `fresh_run_dir`) when the failed run left nothing in it but config.yaml."""
    if path is not None and "rlhf.runtime" in sys.modules:  # no stage started: nothing was written
        from .runtime.rundir import discard_unstarted as discard

        discard(path)


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {info[2]}" for name, info in COMMANDS.items())
    return f"usage: rlhf <command> [--config FILE.yaml] [--field value ...]\n\ncommands:\n{rows}\n\nrlhf <command> --help lists every option."


CONFIG_HELP = ("--config FILE.yaml: read options from a YAML file of `option: value` lines (names as below, "
               "with _ or -), typed and checked as the flags are; flags given as well win over the file.")


def _split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    """(the --config file or None, the other arguments): tyro never sees --config."""
    config_file, rest, i = None, [], 0
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
    return config_file, rest


def _required_marked(cfg):
    """A copy of `cfg` whose unset required fields hold tyro.MISSING, so that --help says
    "(required)" for them instead of "(default: None)". Copied without __init__, whose
    validation would reject the markers; it only ever serves as tyro's defaults for --help."""
    import copy

    import tyro

    from .config.fields import missing_required

    marked = copy.copy(cfg)
    for name in missing_required(cfg):
        object.__setattr__(marked, name, tyro.MISSING)
    return marked


def parse(command: str, argv: list[str]):
    """The stage's config from an optional YAML file and command-line flags (flags win).

    Fields the command cannot run without (its config class's REQUIRED) read "(required)" in
    --help; a config still lacking one is returned as it is, and `main` refuses it.
    """
    import dataclasses
    import inspect

    import tyro

    from . import config

    cls = getattr(config, COMMANDS[command][0])
    config_file, rest = _split_config_flag(argv)
    defaults = cls()
    if config_file:
        values = config.load_yaml(config_file, cls)
        try:
            defaults = dataclasses.replace(defaults, **values)
        except ValueError as err:  # the file's values together fail the config's validation
            raise ValueError(f"{config_file}: {err}") from None
    if "-h" in rest or "--help" in rest:
        defaults = _required_marked(defaults)
    description = f"{inspect.cleandoc(cls.__doc__ or '')}\n\n{CONFIG_HELP}"
    return tyro.cli(cls, args=rest, default=defaults, prog=f"rlhf {command}", description=description)


def _report(argv: list[str]) -> int:
    """`rlhf report RUN_DIR`: write RUN_DIR/report.html; 1 when RUN_DIR is not a run directory."""
    if len(argv) != 1 or argv[0].startswith("-"):
        asked = bool(argv) and argv[0] in ("-h", "--help")
        print(f"usage: rlhf report RUN_DIR\n\n{COMMANDS['report'][2]}", file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    from .eval.run_report import is_demo_run

    module = "rlhf.demo.report" if is_demo_run(argv[0]) else COMMANDS["report"][1]  # a demo gets its own report
    try:
        out = importlib.import_module(module).run(argv[0])
    except (FileNotFoundError, ValueError) as err:
        print(f"rlhf report: error: {err}", file=sys.stderr)
        return 1
    print(f"rlhf report: done -> {out}")
    return 0


def _doctor(argv: list[str]) -> int:
    """`rlhf doctor STAGE [--config FILE.yaml] [STAGE's flags]`: STAGE's config, parsed exactly as
    `rlhf STAGE` parses it, checked by rlhf.doctor, which prints a table; 1 when a check failed."""
    from .doctor import STAGES, run

    if not argv or argv[0] not in STAGES:
        asked = bool(argv) and argv[0] in ("-h", "--help")
        print(f"usage: rlhf doctor {{{'|'.join(STAGES)}}} [--config FILE.yaml] [the stage's options]\n\n"
              f"{COMMANDS['doctor'][2]}", file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    try:
        cfg = parse(argv[0], argv[1:])
    except (ValueError, FileNotFoundError) as err:
        print(f"rlhf doctor {argv[0]}: {err}", file=sys.stderr)
        return 2
    return run(argv[0], cfg)


def _peer_stopped(command: str, err: RuntimeError) -> None:
    """One line for a rank whose collective failed because another process of the run went away."""
    from .runtime.progress import interrupted_message

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the launcher's SIGTERM must not cut this message
    rank = os.environ.get("RANK", "?")
    reason = re.sub(r"^\[[^\]]*\]\s*", "", str(err).splitlines()[0]).split(". This is typically")[0][:160]
    print(f"\nrlhf {command} (rank {rank}): another process of this run stopped, so a collective failed "
          f"({reason}); the launcher's report names it. {interrupted_message()}: run the same launch command "
          "with --resume (any number of processes).", file=sys.stderr)


def _collective_failed(err: RuntimeError) -> bool:
    """A collective that failed because a peer went away (gloo's or NCCL's error, or a timeout)."""
    import torch

    if isinstance(err, getattr(torch.distributed, "DistError", ())):
        return True
    text = str(err)
    return any(mark in text for mark in ("gloo", "NCCL", "Connection reset", "Connection closed", "timed out"))


class StoppedByLauncher(KeyboardInterrupt):
    """SIGTERM from the launcher (torchrun, accelerate launch), which sends it when another rank dies."""


def _stopped_by_launcher(signum, frame):
    raise StoppedByLauncher()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for plugin in PLUGINS:
        importlib.import_module(plugin)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if " ".join(argv[:2]) in COMMANDS:  # two-word commands: `rlhf eval rm ...`
        command, rest = " ".join(argv[:2]), argv[2:]
    if command not in COMMANDS:
        print(f"rlhf: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if command == "doctor":  # `rlhf doctor STAGE ...`: a preflight of STAGE's config, not a stage of its own
        return _doctor(rest)
    if command == "report":  # `rlhf report RUN_DIR`: reads a run directory, no config of its own
        return _report(rest)
    try:
        cfg = parse(command, rest)
    except (ValueError, FileNotFoundError) as err:  # a config that fails validation, a missing --config file
        print(f"rlhf {command}: {err}", file=sys.stderr)
        return 2
    from .config.fields import missing_required

    missing = missing_required(cfg)
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        print(f"rlhf {command}: missing required option(s) {flags} (see rlhf {command} --help)", file=sys.stderr)
        return 2
    try:  # before the stage's heavy imports and before anything is written: data, models, tokenizers
        if command in ("serve", "label serve"):  # the port free before the models load (rlhf.doctor.ports)
            from .doctor.ports import check_port

            check_port(cfg.host, cfg.port)
        # `rlhf label` needs only the web dependencies (no torch): its commands check their own files.
        if not COMMANDS[command][1].startswith("rlhf.feedback."):
            from .doctor.inputs import check_inputs, pin_hub_models

            # rlhf.runtime imports torch (2-3 s): only a run under a launcher (WORLD_SIZE > 1) needs it here
            if command not in DATA_PARALLEL and int(os.environ.get("WORLD_SIZE", "1")) > 1:
                from .runtime.dist import require_single_process

                require_single_process(f"rlhf {command}")
            check_inputs(command, cfg)
            cfg = pin_hub_models(command, cfg)
    except (FileNotFoundError, ValueError) as err:
        print(f"rlhf {command}: error: {err}", file=sys.stderr)
        return 1
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if launched:  # the launcher stops the other ranks with SIGTERM when one dies: say so, and how to go on
        signal.signal(signal.SIGTERM, _stopped_by_launcher)
    fresh = fresh_run_dir(command, cfg)
    try:
        stage = importlib.import_module(COMMANDS[command][1])
        out = stage.run(cfg)
    except KeyboardInterrupt as stop:  # Ctrl-C: where the run stopped and how to continue, not a traceback
        from .runtime.progress import interrupted_message

        if isinstance(stop, StoppedByLauncher):
            rank = os.environ.get("RANK", "?")
            print(f"\nrlhf {command} (rank {rank}): stopped by the launcher (SIGTERM), most likely because another "
                  f"process of this run ended (the launcher's report names it). {interrupted_message()}: run the same "
                  f"launch command with --resume (any number of processes).", file=sys.stderr)
            return 143
        print(f"\nrlhf {command}: {interrupted_message()}", file=sys.stderr)
        return 130
    except Exception as err:
        discard_unstarted(fresh)  # a run that failed at its start leaves no folder behind
        if isinstance(err, (FileNotFoundError, FileExistsError, ValueError)):
            # Bad input (data rows, model directories, run directories) is the user's to fix: no traceback.
            print(f"rlhf {command}: error: {err}", file=sys.stderr)
            return 1
        if isinstance(err, RuntimeError) and launched and _collective_failed(err):
            _peer_stopped(command, err)
            return 1
        raise
    if command in DATA_PARALLEL:
        from .runtime import dist

        dist.print0(f"rlhf {command}: done -> {out}")
        dist.shutdown()
    else:
        print(f"rlhf {command}: done -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
