"""`rlhf rm`: train a scalar reward model on preferences.

The model is a sequence classifier with one output (`rlhf.models.reward`): a value head on the
last token of a causal LM (by default the SFT model, as InstructGPT does), or on [CLS] of an
encoder. Every response of a micro-batch, both sides of each pair and all K of each ranking,
goes through the model in one forward pass: for a causal model packed into rows without padding
(`pack_rewards`), for an encoder padded, batches grouped by length. The loss is Bradley-Terry on pairs,
-log sigmoid(r_chosen - r_rejected - margin) with the row's optional margin, and Plackett-Luce on
rankings (`rlhf.algos.preference`); both are summed over preferences, the unit of the loop.

After training, the rewards of every training response give the mean and standard deviation
stored in the saved model's config.json (`reward_mean`, `reward_std`), so later stages can
normalise; `summary.json` has them too, with the training and held-out accuracy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import runtime
from ..algos.preference import bradley_terry, plackett_luce
from ..config import RewardConfig
from ..data.batches import check_batch
from ..data.collate import collate_rewards, pack_rewards
from ..data.formats import read_comparisons, read_preferences
from ..data.records import Comparison
from ..data.tokenize import RewardExample, tokenize_for_reward
from ..models.reward import (
    RewardModel,
    disable_dropout,
    load_reward_backbone,
    record_reward_stats,
    sequence_rewards,
    supports_packing,
)
from . import loop, reward_defaults
from .probe import fit_linear_probe
from .weight_average import TailAverage, tail_start

RANKED = "ranked_"  # batch keys "ranked_K": (n, K) sequence indices of the n K-way rankings, best first


@dataclass(frozen=True)
class TokenizedPreference:
    responses: tuple[RewardExample, ...]  # (K,) prompt + response inputs; a pair is (chosen, rejected)
    ranking: tuple[int, ...]  # (K,) indices into responses, best first; (0, 1) for a pair
    margin: float | None  # pairs only: required reward gap (None = 0)
    is_pair: bool  # from a comparison (Bradley-Terry with margin) or a ranking (Plackett-Luce)


def tokenize_preferences(tokenizer, records, max_length: int, input_format: str,
                         context_turns: int = -1) -> list[TokenizedPreference]:
    """Comparisons and rankings -> tokenised preferences, each response encoded once."""
    out = []
    for record in records:
        if isinstance(record, Comparison):
            responses, ranking, margin = (record.chosen, record.rejected), (0, 1), record.margin
        else:
            responses, ranking, margin = record.responses, record.ranking, None
        encoded = tuple(tokenize_for_reward(tokenizer, record.prompt, r, max_length, input_format, context_turns)
                        for r in responses)
        out.append(TokenizedPreference(encoded, tuple(ranking), margin, isinstance(record, Comparison)))
    return out


def make_batch(preferences: list[TokenizedPreference], pad_id: int, packing: bool = False, max_length: int = 0) -> dict:
    """All responses of `preferences` as one batch of N sequences, plus where each preference's are.

    Returns the model inputs of `collate_rewards` (or `pack_rewards` with `packing`), and
    pair_index (P, 2) sequence indices of (chosen, rejected), pair_margin (P,), and for each K
    present `ranked_K` (n, K) sequence indices best first; n_units = preferences, n_tokens = real tokens.
    """
    sequences: list[RewardExample] = []
    pairs, margins, ranked = [], [], {}
    for pref in preferences:
        first = len(sequences)
        sequences.extend(pref.responses)
        order = [first + i for i in pref.ranking]
        if pref.is_pair:
            pairs.append(order)
            margins.append(pref.margin or 0.0)
        else:
            ranked.setdefault(len(order), []).append(order)
    batch = pack_rewards(sequences, max_length, pad_id) if packing else collate_rewards(sequences, pad_id)
    batch["pair_index"] = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
    batch["pair_margin"] = torch.tensor(margins, dtype=torch.float32)
    for k, orders in ranked.items():
        batch[f"{RANKED}{k}"] = torch.tensor(orders, dtype=torch.long)
    batch["n_units"] = len(preferences)
    batch["n_tokens"] = sum(len(s.input_ids) for s in sequences)
    return batch


def preference_loss_sum(model, batch: dict) -> tuple[torch.Tensor, dict]:
    """Bradley-Terry over the batch's pairs plus Plackett-Luce over its rankings, summed over
    preferences; stats: accuracy (share of ordered response pairs scored in the right order) and
    margin (mean r_chosen - r_rejected over pairs)."""
    return preference_loss_from_rewards(sequence_rewards(model, batch), batch)


def preference_loss_from_rewards(rewards: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
    """`preference_loss_sum` given the (N,) rewards of the batch's sequences."""
    loss_sum = rewards.new_zeros(())
    concordant, ordered_pairs, stats = 0.0, 0, {}
    pairs = batch["pair_index"]
    if len(pairs):
        chosen, rejected = rewards[pairs[:, 0]], rewards[pairs[:, 1]]
        loss_sum = loss_sum + bradley_terry(chosen, rejected, batch["pair_margin"]) * len(pairs)
        concordant += float((chosen > rejected).sum())
        ordered_pairs += len(pairs)
        stats["margin"] = float((chosen - rejected).detach().mean())
    for key in [k for k in batch if k.startswith(RANKED)]:
        scores = rewards[batch[key]]  # (n, K) in ranking order, best first
        n, k = scores.shape
        ranking = torch.arange(k, device=scores.device).expand(n, k)
        loss_sum = loss_sum + plackett_luce(scores, ranking) * n
        above = scores[:, :, None] > scores[:, None, :]  # (n, K, K): response i scored above response j
        concordant += float(above.triu(1).sum())
        ordered_pairs += n * k * (k - 1) // 2
    stats["accuracy"] = concordant / max(ordered_pairs, 1)
    return loss_sum, stats


def build_model(cfg: RewardConfig, device: torch.device):
    """The reward model to train (before LoRA), its tokenizer and input format."""
    model, tokenizer, input_format = load_reward_backbone(cfg.model, cfg.input_format, cfg.trust_remote_code)
    if not cfg.dropout:
        disable_dropout(model)
    return model.to(device), tokenizer, input_format


def add_lora(model, cfg: RewardConfig):
    """The model with LoRA adapters on every linear layer (--lora-r > 0), else unchanged."""
    if cfg.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        # SEQ_CLS: the new value head trains in full beside the adapters (peft's modules_to_save).
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules="all-linear", task_type="SEQ_CLS")
        model = get_peft_model(model, lora)
    return model


def pair_accuracy(rewards: torch.Tensor) -> float:
    """Share of pairs with chosen above rejected; rewards (P, 2) as (chosen, rejected)."""
    return float((rewards[:, 0] > rewards[:, 1]).float().mean())


def run(cfg: RewardConfig) -> Path:
    if cfg.model is None or cfg.data is None:
        raise ValueError("rm needs --model DIR (a causal LM such as runs/sft/model, or an encoder) "
                         "and --data FILE of comparisons or rankings")
    cfg = reward_defaults.resolve(cfg)  # --lr, --head-init, --context-turns, --average-tail left unset: per backbone kind
    if cfg.ensemble or cfg.warm:
        return run_members(cfg)
    return train_single(cfg)


def train_single(cfg: RewardConfig, part_of: runtime.RunDir | None = None) -> Path:
    """One reward model: the whole `rlhf rm` run of the module docstring; `part_of` is the run
    directory of the ensemble this model is a member of."""
    # Inputs first: a broken data file, or too few preferences for a batch, fail in seconds, before
    # the run directory and the model.
    records = read_preferences(cfg.data, skip_bad_rows=cfg.skip_bad_rows)
    eval_records = read_comparisons(cfg.eval_data) if cfg.eval_data else []
    check_batch(len(records), cfg.batch_size, runtime.dist.world_size(), "preferences", Path(cfg.data).name)
    rt = runtime.init(cfg, part_of=part_of)
    device = rt.device
    init_seed = cfg.seed if cfg.init_seed is None else cfg.init_seed
    if init_seed != cfg.seed:  # a shared head (WARM's members), then this member's own random stream
        runtime.seed_everything(init_seed)
    model, tokenizer, input_format = build_model(cfg, device)  # the new value head is drawn here
    if init_seed != cfg.seed:
        runtime.seed_everything(cfg.seed)
    pad_id = tokenizer.pad_token_id
    packing = cfg.packing and supports_packing(model)  # encoders attend both ways: rows cannot be shared
    tokenize = lambda rows: tokenize_preferences(tokenizer, rows, cfg.max_length, input_format, cfg.context_turns)  # noqa: E731

    preferences = tokenize(records)
    lengths = [max(len(r.input_ids) for r in p.responses) for p in preferences]
    plan = loop.BatchPlan(len(preferences), cfg.batch_size, cfg.seed, lengths=lengths if cfg.group_by_length else None)
    batch_at = lambda i: make_batch([preferences[j] for j in plan.micro_batch(i)], pad_id, packing, cfg.max_length)  # noqa: E731

    probe = {}
    if cfg.head_init == "probe":  # deterministic, so a resumed run recomputes the same head (then loads its checkpoint)
        # chunks of similar length, each padded only to its own longest: about half the time of
        # chunks in file order, which a long answer pads to near max_length; the same optimum
        by_length = [preferences[i] for i in sorted(range(len(preferences)), key=lengths.__getitem__)]
        chunks = [by_length[i : i + 4 * cfg.batch_size] for i in range(0, len(by_length), 4 * cfg.batch_size)]
        batches = [runtime.to_device(make_batch(c, pad_id, packing, cfg.max_length), device) for c in chunks]
        probe = fit_linear_probe(model, batches, preference_loss_from_rewards, pad_id, cfg.probe_l2,
                                 rt.autocast(), progress=cfg.progress and rt.is_main)
    model = add_lora(model, cfg).to(device)

    eval_pairs = tokenize(eval_records) if eval_records else []
    scorer = RewardModel(model, tokenizer, input_format, cfg.max_length, device=device, precision=rt.precision,
                         context_turns=cfg.context_turns)

    def pair_rewards(pairs: list[TokenizedPreference]) -> torch.Tensor:
        """(P, 2) rewards of (chosen, rejected) for each pair."""
        return scorer.score_examples([r for p in pairs for r in p.responses], cfg.batch_size * 2).view(-1, 2)

    def evaluate() -> dict:
        if not eval_pairs:
            return {}
        rewards = pair_rewards(eval_pairs)
        margins = torch.tensor([p.margin or 0.0 for p in eval_pairs])
        return {"eval_accuracy": pair_accuracy(rewards),
                "eval_loss": float(bradley_terry(rewards[:, 0], rewards[:, 1], margins)),
                "eval_margin": float((rewards[:, 0] - rewards[:, 1]).mean())}

    averaged = TailAverage(tail_start(plan.total_steps(cfg), cfg.average_tail)) if cfg.average_tail else None
    result = loop.fit(rt, model, batch_at, plan, preference_loss_sum, evaluate=evaluate, desc="rm",
                      weight_average=averaged)
    final_eval = evaluate()
    if averaged is not None:  # the last weights' figures too, to see what the average changed
        final_eval = {f"last_weights_{k}": v for k, v in final_eval.items()}
        averaged.apply(model)
        final_eval.update(evaluate())

    # Reward statistics on the training data, stored with the model for later normalisation. A
    # seeded sample is enough for a mean and a std, and scoring every response costs a third of
    # a training epoch.
    train_pairs = [p for p in preferences if p.is_pair]
    measured = preferences
    if 0 < cfg.stats_examples < len(preferences):
        picked = sorted(random.Random(cfg.seed).sample(range(len(preferences)), cfg.stats_examples))
        measured = [preferences[i] for i in picked]
    train_rewards = scorer.score_examples([r for p in measured for r in p.responses], cfg.batch_size * 2)
    mean, std = float(train_rewards.mean()), float(train_rewards.std())
    starts = torch.tensor([0] + [len(p.responses) for p in measured]).cumsum(0)[:-1]  # first sequence of each
    pair_starts = starts[[i for i, p in enumerate(measured) if p.is_pair]]
    train_accuracy = pair_accuracy(train_rewards[torch.stack([pair_starts, pair_starts + 1], 1)]) if len(pair_starts) else None
    record_reward_stats(model, mean, std, cfg.max_length, cfg.context_turns)
    return rt.finish(model, tokenizer, {
        "stage": "rm",
        "steps": result.steps,
        "skipped_steps": result.skipped_steps,  # non-finite loss or gradient: update skipped
        "preferences": len(preferences),
        "pairs": len(train_pairs),
        "rankings": len(preferences) - len(train_pairs),
        "skipped_rows": getattr(records, "skipped", 0),
        "input_format": input_format,
        "packed": packing,
        "context_turns": cfg.context_turns,
        "head_init": cfg.head_init,
        "lr": cfg.lr,
        "average_tail": cfg.average_tail,
        "averaged_steps": averaged.count if averaged is not None else 0,
        **probe,
        "train_loss": result.last_metrics.get("loss"),
        "train_accuracy": train_accuracy,  # on the `stats_examples` sample
        "stats_examples": len(measured),
        **final_eval,
        "eval_pairs": len(eval_pairs),
        "reward_mean": mean,
        "reward_std": std,
        "train_tokens": result.tokens,
        "tokens_per_s": result.tokens_per_s,
        "train_wall_s": result.wall_s,
    })


def run_members(cfg: RewardConfig) -> Path:
    """`--ensemble K` / `--warm K`: K members in `OUT/members/`, then one `OUT/model/` (see
    `rlhf.train.reward_ensemble`); summary.json holds every member's summary and the result's
    held-out accuracy."""
    from ..models.ensemble import save_ensemble
    from ..models.reward import load_reward_model
    from . import reward_ensemble

    runtime.dist.require_single_process("rlhf rm --ensemble/--warm")  # members are trained one after another
    check_batch(len(read_preferences(cfg.data, skip_bad_rows=cfg.skip_bad_rows)), cfg.batch_size, 1, "preferences",
                Path(cfg.data).name)  # before OUT/ is made: each member checks again, inside it
    rt = runtime.init(cfg)
    members = reward_ensemble.train_members(cfg, rt.run_dir, train_single)
    member_dirs = [model_dir for model_dir, _ in members]
    stats = {}
    if cfg.ensemble:
        model_dir = save_ensemble(member_dirs, rt.run_dir.model_dir,
                                  {"seeds": [cfg.seed + i for i in range(cfg.ensemble)]})
    else:
        model, tokenizer, input_format = reward_ensemble.average_members(member_dirs, cfg.trust_remote_code)
        model = model.to(rt.device)
        # The averaged model's rewards on the training data: its own statistics for normalisation.
        scorer = RewardModel(model, tokenizer, input_format, cfg.max_length, device=rt.device, precision=rt.precision,
                             context_turns=cfg.context_turns)
        records = read_preferences(cfg.data, skip_bad_rows=cfg.skip_bad_rows)
        if 0 < cfg.stats_examples < len(records):  # the same seeded sample a single model measures on
            records = [records[i] for i in sorted(random.Random(cfg.seed).sample(range(len(records)), cfg.stats_examples))]
        preferences = tokenize_preferences(tokenizer, records, cfg.max_length, input_format, cfg.context_turns)
        rewards = scorer.score_examples([r for p in preferences for r in p.responses], cfg.batch_size * 2)
        stats = {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
                 "member_weight_distance": reward_ensemble.weight_distance(member_dirs)}
        record_reward_stats(model, stats["reward_mean"], stats["reward_std"], cfg.max_length, cfg.context_turns)
        model_dir = runtime.save_pretrained(model, tokenizer, rt.run_dir.model_dir)
    final_eval = {}
    if cfg.eval_data:  # the result as a later stage loads it
        rm = load_reward_model(model_dir, device=rt.device, precision=rt.precision)
        final_eval = reward_ensemble.pair_accuracy_on(rm, read_comparisons(cfg.eval_data))
    rt.run_dir.truncate_logs(0)  # a resumed run writes its member lines again
    for row in reward_ensemble.member_metrics(members):
        rt.run_dir.log(row)
    # model/ is written above (the held-out figures are read from it): finish adds summary.json
    rt.finish(None, None, {
        "stage": "rm", "kind": "ensemble" if cfg.ensemble else "warm", "members": [summary for _, summary in members],
        "steps": sum(summary.get("steps", 0) for _, summary in members),
        "member_eval_accuracy": [summary.get("eval_accuracy") for _, summary in members],
        **stats, **final_eval,
    })
    return model_dir
