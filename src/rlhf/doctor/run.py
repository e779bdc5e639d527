"""`rlhf doctor STAGE`: every check for one stage's config, as a table; non-zero on a failure.

    batch, tokens per step, steps       the batch arithmetic (always informative)
    prompts cut by max_length           FAIL when most are cut, warn when some are
    responses cut by max_length         sft, rm, dpo: FAIL when most completions lose their end (and EOS)
    responses within max_new_tokens     ppo, online dpo: warn only (a continuation task may stop anywhere)
    chat template / text round trip     FAIL when text does not survive tokenise + detokenise
    ppo step at lr 0                    ppo: FAIL unless ratio exactly 1, clipfrac 0, approx KL 0, no weight moved
    time, memory                        measured on a real step, extrapolated to the whole run
    kill and resume                     FAIL unless a resumed run ends bit for bit where a straight one does
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from .. import runtime
from ..models.load import load_tokenizer
from .inputs import check_inputs
from . import arithmetic, lengths, trial
from .checks import FAIL, INFO, PASS, WARN, Check, failed, share_check, table
from .roundtrip import round_trip

STAGES = ("sft", "rm", "dpo", "ppo")


def _cut_checks(profile: lengths.Lengths, cfg, response_word: str) -> list[Check]:
    measured = f"; measured on the first {profile.profiled} of {profile.units}" if profile.units > profile.profiled else ""
    prompts = share_check("prompts cut by max_length", profile.prompts_cut, profile.profiled,
                          f"{profile.unit} lose the start of their prompt",
                          f"longest prompt {profile.longest_prompt} tokens, max_length {cfg.max_length}{measured}")
    responses = share_check("responses cut by max_length", profile.responses_cut, profile.profiled,
                            f"{profile.unit} lose the end of their {response_word} (and its EOS)",
                            f"the model never sees how those end{measured}")
    return [prompts, responses]


def _eos_check(profile: lengths.Lengths, cfg, sampled_ended: float | None) -> Check:
    """ppo / online dpo: can a response end within max_new_tokens? Warn only: a continuation task
    may be meant to stop at max_new_tokens."""
    name, parts, result = "responses within max_new_tokens", [], PASS
    if profile.references:
        long = sum(n > cfg.max_new_tokens for n in profile.references)
        parts.append(f"{long}/{len(profile.references)} reference responses of the data need more than "
                     f"max_new_tokens {cfg.max_new_tokens} tokens to reach EOS")
        result = WARN if long else result
    if sampled_ended is not None:
        parts.append(f"{sampled_ended:.0%} of the policy's samples reached a stop token")
        result = WARN if sampled_ended < 0.5 else result
    if not parts:
        return Check(name, INFO, "no reference responses in the data and no samples drawn")
    if result == WARN:
        parts.append("cut responses are scored unfinished (see --missing-eos-penalty)")
    return Check(name, result, "; ".join(parts))


def _input_format(cfg) -> str:
    if cfg.input_format != "auto":
        return cfg.input_format
    from transformers import AutoConfig

    from ..models.reward import infer_input_format

    return infer_input_format(AutoConfig.from_pretrained(cfg.model, local_files_only=True,
                                                         trust_remote_code=cfg.trust_remote_code))


def _profile(stage: str, cfg, tokenizer) -> lengths.Lengths:
    if stage == "sft":
        return lengths.sft_lengths(cfg, tokenizer)
    if stage == "rm":
        return lengths.rm_lengths(cfg, tokenizer, _input_format(cfg))
    if stage == "dpo" and not cfg.online:
        return lengths.dpo_lengths(cfg, tokenizer)
    return lengths.prompt_lengths(cfg, tokenizer)


def _trial_rows(stage: str, cfg, profile: lengths.Lengths) -> int:
    """Rows of the data file the trial runs read: enough for their steps."""
    if stage == "ppo":
        return cfg.batch_size * trial.TRIAL_STEPS
    if getattr(cfg, "online", False):
        return cfg.batch_size * cfg.grad_accum * trial.TRIAL_STEPS
    rows = cfg.batch_size * cfg.grad_accum * trial.TRIAL_STEPS
    if getattr(cfg, "packing", False):  # several examples share a packed row
        rows *= max(1, math.ceil(cfg.max_length / max(1.0, profile.mean_tokens)))
    return rows


def _ppo_step(cfg) -> tuple:
    """(the lr-0 step's result or None, its check row)."""
    from .ppo_step import lr0_check, run_step

    try:
        step = run_step(cfg)
    except Exception as err:  # noqa: BLE001  (a crash of the stage's own code is the finding)
        return None, [Check("ppo step at lr 0", FAIL, f"{type(err).__name__}: {err}")]
    return step, [lr0_check(step)]


def _arithmetic(stage: str, cfg, profile: lengths.Lengths, step) -> arithmetic.Arithmetic:
    if stage == "ppo":
        from ..train.ppo import resolve_options

        return arithmetic.ppo(cfg, resolve_options(cfg), profile, step.response_tokens if step else None)
    if getattr(cfg, "online", False):
        return arithmetic.online_dpo(cfg, profile)
    two_sequences = stage == "rm" or (stage == "dpo" and cfg.loss != "kto")  # pairs: chosen and rejected
    return arithmetic.offline(cfg, profile, sequences_per_unit=2 if two_sequences else 1)


def _length_checks(stage: str, cfg, profile: lengths.Lengths, step) -> list[Check]:
    if stage == "ppo" or getattr(cfg, "online", False):  # prompts that a policy continues
        budget = cfg.max_length - cfg.max_new_tokens
        return [share_check("prompts cut by max_length", profile.prompts_cut, profile.profiled,
                            f"prompts longer than max_length - max_new_tokens = {budget} tokens lose their start",
                            f"longest prompt {profile.longest_prompt} tokens"),
                _eos_check(profile, cfg, step.ended if step else None)]
    return _cut_checks(profile, cfg, "completion" if stage == "sft" else "response")


def _round_trip(stage: str, cfg, tokenizer, profile: lengths.Lengths) -> Check:
    try:
        encoder = stage == "rm" and _input_format(cfg) == "pair"
        return round_trip(tokenizer, profile.prompts, profile.responses, encoder=encoder)
    except Exception as err:  # noqa: BLE001  (a template that raises is the finding)
        return Check("tokenizer round trip", FAIL, f"{type(err).__name__}: {err}")


def _trial_checks(stage: str, cfg, profile: lengths.Lengths, plan: arithmetic.Arithmetic) -> list[Check]:
    """Time, memory and the kill-and-resume round trip, from short real runs in a temporary directory."""
    online = getattr(cfg, "online", False)
    rows = _trial_rows(stage, cfg, profile)
    with tempfile.TemporaryDirectory(prefix="rlhf-doctor-") as workdir:
        try:
            result = trial.run_trial(stage, cfg, rows, Path(workdir), resume=not online)
        except Exception as err:  # noqa: BLE001  (a crash of the stage's own code is the finding)
            return trial.trial_failed(err)
    reference_scale = profile.units / max(1, min(rows, profile.units))  # dpo: the trial's reference pass read `rows`
    return [trial.time_check(result, plan.total_steps, plan.step_word, reference_scale),
            trial.memory_check(result, runtime.pick_device(cfg.device).type),
            trial.resume_skipped() if online else trial.resume_check(result)]


def diagnose(stage: str, cfg) -> list[Check]:
    """All checks of `stage` (sft, rm, dpo, ppo) for `cfg`, in table order."""
    if cfg.model is None or cfg.data is None or (stage == "ppo" and cfg.reward is None):
        return [Check("config", FAIL, f"{stage} needs --model and --data" + (" and --reward" if stage == "ppo" else ""))]
    try:  # the checks every stage makes before it starts: data rows, model directories, tokenizers
        check_inputs(stage, cfg)
        if stage == "rm":  # the per-backbone defaults the run would use (how much prompt it reads)
            from ..train.reward_defaults import resolve

            cfg = resolve(cfg)
        tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
        profile = _profile(stage, cfg, tokenizer)
    except (OSError, ValueError) as err:  # a missing model, a bad data row: nothing else can be checked
        return [Check("inputs", FAIL, f"{type(err).__name__}: {err}")]

    step, step_checks = _ppo_step(cfg) if stage == "ppo" else (None, [])
    plan = _arithmetic(stage, cfg, profile, step)
    checks = [Check("inputs", PASS, f"{profile.units} {profile.unit}; data rows, model directories and tokenizers "
                                    "pass the stage's own input checks"),
              *plan.checks, *_length_checks(stage, cfg, profile, step), _round_trip(stage, cfg, tokenizer, profile),
              *step_checks]
    if not failed(plan.checks):  # a plan that cannot form a batch cannot run either
        checks += _trial_checks(stage, cfg, profile, plan)
    return checks


def run(stage: str, cfg) -> int:
    """Print the table of `diagnose`; 1 when a check failed, else 0."""
    checks = diagnose(stage, cfg)
    print(table(checks))
    bad = failed(checks)
    if bad:
        print(f"\nrlhf doctor {stage}: {len(bad)} check(s) failed: {', '.join(c.name for c in bad)}")
        return 1
    warned = [c.name for c in checks if c.result == WARN]
    print(f"\nrlhf doctor {stage}: no check failed" + (f" ({len(warned)} warning(s): {', '.join(warned)})" if warned else ""))
    return 0
