"""Who judges a round's new policy: never the reward model trained on the round's own labels.

A policy trained against a reward model wins by that reward model's lights whether or not people
would agree, so its win rate measures little. The judge is, in this order:

1. `--judge SCORER` (a reward-model directory or `module:function`, e.g. an AI judge's scorer), as
   given; the reward model this round trains is refused;
2. the gold scorer the current round names, where one exists: `gold:` in the config.yaml of an
   `rlhf demo` directory's stages (the demo's scripted oracle) or of a stage run, or the gold an
   earlier `rlhf iterate` round recorded in its lineage;
3. held-out human labels: a share (`--holdout`) of the new comparisons, whole prompts at a time,
   is kept out of training (OUT/data/heldout.jsonl), and the new policy is judged by how often its
   change from the current policy agrees with them. A held-out pair counts as a win when
   log pi_new(y|x) - log pi_current(y|x) rises more for the chosen response than for the rejected
   one (the implicit reward of the change, as DPO reads a policy), half on a tie. The round's
   reward model (rm+ppo) is scored on the same pairs, and KL to the current policy is measured on
   sampled responses to the evaluation's prompts (--eval-data) as `rlhf eval policy` measures it.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import IterateConfig
from .parent import LINEAGE, Parent

GIVEN, GOLD, HELDOUT = "given", "gold", "held-out labels"
HELDOUT_FILE = "heldout.jsonl"  # in OUT/data/


@dataclass(frozen=True)
class Judge:
    kind: str  # GIVEN | GOLD | HELDOUT
    spec: str | None  # the scorer (GIVEN, GOLD); None for held-out labels

    def describe(self) -> str:
        if self.kind == HELDOUT:
            return f"held-out labels (data/{HELDOUT_FILE})"
        return f"{self.spec} ({'--judge' if self.kind == GIVEN else 'gold'})"

    def to_json(self) -> dict:
        return {"kind": self.kind, "spec": self.spec}


def recorded_gold(parent: Parent) -> str | None:
    """The gold scorer the current round names (see the module docstring), or None."""
    run = parent.run_dir
    if parent.kind == "iterate":
        return json.loads((run / LINEAGE).read_text(encoding="utf-8")).get("gold")
    for path in [run / "config.yaml", *sorted(run.glob("*/config.yaml"))]:
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(values, dict) and isinstance(values.get("gold"), str) and values["gold"]:
            return values["gold"]
    return None


def choose_judge(cfg: IterateConfig, parent: Parent, own_reward_model: Path | None) -> Judge:
    """The round's judge (module docstring); ValueError when --judge names the round's own reward
    model, or when there is no judge at all (--holdout 0 without gold or --judge)."""
    if cfg.judge:
        if own_reward_model is not None and Path(cfg.judge).expanduser().resolve() == own_reward_model.resolve():
            raise ValueError(f"--judge {cfg.judge} is the reward model this round trains on the same labels, so the "
                             "policy trained against it would win by construction: pass another judge (a gold or AI "
                             "judge's scorer), or leave --judge out to judge by held-out labels (--holdout)")
        return Judge(GIVEN, cfg.judge)
    gold = recorded_gold(parent)
    if gold:
        return Judge(GOLD, gold)
    if cfg.holdout <= 0:
        raise ValueError(f"{parent.run_dir} names no gold scorer and --holdout is 0, so nothing independent of the "
                         "new labels could judge the round: pass --judge SCORER (an AI judge's or a reward model not "
                         "trained on these labels), or --holdout 0.2 to judge by held-out labels")
    return Judge(HELDOUT, None)


def split_heldout(rows: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows): whole prompts, drawn in a seeded order, are held out until
    they hold `share` of the rows (at least one); ValueError when nothing would be left to train on."""
    by_prompt: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_prompt.setdefault(json.dumps(row["prompt"], sort_keys=True), []).append(i)
    groups = list(by_prompt.values())
    random.Random(seed).shuffle(groups)
    want, held = max(1, round(share * len(rows))), set()
    for group in groups:
        if len(held) >= want:
            break
        held.update(group)
    if len(held) >= len(rows):
        raise ValueError(f"{len(rows)} new comparisons ({len(by_prompt)} prompts): too few to hold {share:.0%} out to "
                         "judge the round by (--holdout) and train on the rest: collect more feedback, or pass "
                         "--judge SCORER")
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def _no_scores(prompts, responses) -> list[float]:
    """A judge that prefers nothing: the sampled evaluation measures KL and lengths only."""
    return [0.0] * len(responses)


def heldout_evaluation(policy_dir: Path, parent_dir: Path, heldout: Path, reward_model: Path | None,
                       prompts: list, cfg: IterateConfig) -> dict:
    """The new policy judged by held-out labels (module docstring): label_accuracy (ties half) with
    its 95% Wilson interval, wins / ties / losses (the pairs its change agrees with, ties on, and
    disagrees with), the round's reward model's accuracy on the same pairs, and KL to the current
    policy on `prompts`."""
    from .. import runtime
    from ..data.formats import read_comparisons
    from ..data.tokenize import tokenize_pair
    from ..eval.metrics import pairwise_outcomes, wilson_interval, win_rate
    from ..eval.policy import evaluate_policy
    from ..models.load import load_causal_lm, load_tokenizer
    from ..rollout.attention import use_fp32_attention
    from ..rollout.generate import SamplingConfig
    from ..train.preference_lm import score_examples

    device = runtime.pick_device(cfg.device)
    autocast = lambda: runtime.autocast(cfg.precision, device)  # noqa: E731
    pairs = read_comparisons(heldout)
    tokenizer = load_tokenizer(policy_dir)
    tokenized = [tokenize_pair(tokenizer, c.prompt, c.chosen, c.rejected, cfg.max_length) for c in pairs]
    examples = [p.chosen for p in tokenized] + [p.rejected for p in tokenized]
    policy, parent = (load_causal_lm(d).to(device).eval() for d in (policy_dir, parent_dir))
    for model in (policy, parent):
        use_fp32_attention(model)  # CPU only, as `rlhf eval policy` does (rlhf.rollout.attention)
    change = (score_examples(policy, examples, tokenizer.pad_token_id, 16, device, autocast)
              - score_examples(parent, examples, tokenizer.pad_token_id, 16, device, autocast)).view(2, -1)
    judged = win_rate(pairwise_outcomes(change[0].tolist(), change[1].tolist()))
    # Wilson's interval: with a few held-out pairs the normal one collapses to a point (n = 1) or leaves [0, 1]
    low, high = wilson_interval(judged["wins"] + 0.5 * judged["ties"], judged["n"])
    report = {"label_accuracy": judged.pop("win_rate"), **judged, "ci_low": low, "ci_high": high,
              "heldout_file": str(heldout)}
    if reward_model is not None:
        from ..models.reward import load_reward_model
        from ..train.reward_ensemble import pair_accuracy_on

        rm = load_reward_model(reward_model, device=device, precision=cfg.precision)
        report["reward_model_accuracy"] = pair_accuracy_on(rm, pairs)["eval_accuracy"]
    sampled = evaluate_policy(policy, parent, tokenizer, prompts[: cfg.eval_prompts], _no_scores,
                              SamplingConfig(cfg.max_new_tokens, 1.0), seed=cfg.seed + 7, autocast=autocast,
                              max_prompt_tokens=cfg.max_length - cfg.max_new_tokens)
    report.update({key: sampled[key] for key in ("kl_to_reference", "kl_to_reference_k1", "policy_length",
                                                 "reference_length", "policy_eos_share", "reference_eos_share")})
    return report
