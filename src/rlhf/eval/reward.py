"""`rlhf eval rm`: how well a reward model orders held-out comparisons.

For each pair, d = r(prompt, chosen) - r(prompt, rejected). Reported:
- accuracy: share of pairs with d > 0 (a tie, d = 0, counts as wrong); n: pairs scored;
- mean margin: mean of d, and the Bradley-Terry loss, mean of -log sigmoid(d);
- calibration: a reliability table. The model's confidence in its own choice is
  sigmoid(|d|), in [0.5, 1]; pairs are binned by it, and each bin's mean confidence is set beside
  its observed accuracy (the share of its pairs where the model's choice was the human's). A
  calibrated model's rows agree; the expected calibration error (ECE) is their count-weighted
  mean gap. This is the usual table for P(chosen wins) = sigmoid(d) with each pair shown in both
  orders, folded at 0.5;
- accuracy by prompt length: pairs cut into quantile buckets of the prompt's token count (the
  model's tokenizer, before truncation);
- like RewardBench, several files at once (`--data a.jsonl b.jsonl`): the figures above over all
  of them, and accuracy per file and per `category` field of a row (rows without one: "all"),
  each with its Wilson 95% interval;
- for an ensemble (`rlhf rm --ensemble K`), d is the ensemble's margin (the mean of its members'
  standardised scores), so the calibration above is that of sigmoid(mean margin); beside it each
  member's accuracy and the accuracy in bins of the members' disagreement on the pair (the
  standard deviation of their margins).
The table is printed and everything is written as JSON (`--out`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import runtime
from ..config import EvalRMConfig
from ..data.tokenize import conversation_text
from ..models.ensemble import EnsembleRewardModel
from ..models.reward import load_reward_model
from .metrics import wilson_interval


def reliability_table(margins: torch.Tensor, bins: int) -> list[dict]:
    """Rows {lo, hi, n, confidence, accuracy} over confidence sigmoid(|d|) in [0.5, 1].

    margins: (P,) d = r_chosen - r_rejected. Bins are [lo, hi), the last one closed; empty bins
    are kept with n = 0 and None for their means.
    """
    confidence = torch.sigmoid(margins.abs().double())
    correct = (margins > 0).double()
    edges = torch.linspace(0.5, 1.0, bins + 1, dtype=torch.float64)
    index = torch.bucketize(confidence, edges[1:-1], right=True)  # bin of each pair, 0..bins-1
    rows = []
    for b in range(bins):
        in_bin = index == b
        n = int(in_bin.sum())
        rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n,
                     "confidence": float(confidence[in_bin].mean()) if n else None,
                     "accuracy": float(correct[in_bin].mean()) if n else None})
    return rows


def expected_calibration_error(table: list[dict]) -> float:
    """Count-weighted mean of |accuracy - confidence| over the rows of `reliability_table`."""
    total = sum(row["n"] for row in table)
    return sum(row["n"] * abs(row["accuracy"] - row["confidence"]) for row in table if row["n"]) / max(total, 1)


def accuracy_by_length(margins: torch.Tensor, prompt_lengths: torch.Tensor, buckets: int) -> list[dict]:
    """Rows {lo, hi, n, accuracy}: pairs bucketed by prompt length at its quantiles.

    margins: (P,) d; prompt_lengths: (P,) tokens. Bucket b holds lengths in [lo, hi]; ties at a
    quantile go to the lower bucket, so buckets may be uneven (or empty, and then dropped).
    """
    lengths = prompt_lengths.double()
    cuts = torch.quantile(lengths, torch.linspace(0, 1, buckets + 1, dtype=torch.float64)[1:-1]) if buckets > 1 \
        else torch.empty(0, dtype=torch.float64)
    index = torch.bucketize(lengths, cuts)  # lengths <= cut go left
    rows = []
    for b in range(buckets):
        in_bucket = index == b
        if in_bucket.any():
            rows.append({"lo": int(prompt_lengths[in_bucket].min()), "hi": int(prompt_lengths[in_bucket].max()),
                         "n": int(in_bucket.sum()), "accuracy": float((margins[in_bucket] > 0).double().mean())})
    return rows


def summarize(margins: torch.Tensor, prompt_lengths: torch.Tensor, calibration_bins: int, length_buckets: int) -> dict:
    """Every figure of the report from the (P,) margins d and (P,) prompt token counts."""
    table = reliability_table(margins, calibration_bins)
    return {
        "n": int(margins.numel()),
        "accuracy": float((margins > 0).double().mean()),
        "mean_margin": float(margins.double().mean()),
        "loss": float(-F.logsigmoid(margins.double()).mean()),
        "ece": expected_calibration_error(table),
        "calibration": table,
        "by_prompt_length": accuracy_by_length(margins, prompt_lengths, length_buckets),
    }


def format_report(report: dict) -> str:
    """The printed table."""
    lines = [f"reward model  {report['model']}", f"data          {report['data']}",
             f"pairs         {report['n']}" + (f" ({report['skipped_rows']} bad rows skipped)" if report["skipped_rows"] else ""),
             f"accuracy      {report['accuracy']:.4f}  (95% CI +-{report['accuracy_ci95']:.3f})",
             f"mean margin   {report['mean_margin']:+.4f}   loss {report['loss']:.4f}   ECE {report['ece']:.4f}",
             "", "calibration: confidence sigmoid(|r_w - r_l|) against observed accuracy",
             f"  {'bin':<13}{'n':>6}{'confidence':>12}{'accuracy':>10}"]
    for row in report["calibration"]:
        conf = f"{row['confidence']:.3f}" if row["n"] else "-"
        acc = f"{row['accuracy']:.3f}" if row["n"] else "-"
        lines.append(f"  [{row['lo']:.2f}, {row['hi']:.2f}) {row['n']:>6}{conf:>12}{acc:>10}")
    lines += ["", "accuracy by prompt length (tokens)", f"  {'tokens':<13}{'n':>6}{'accuracy':>10}"]
    for row in report["by_prompt_length"]:
        lines.append(f"  {str(row['lo']) + '-' + str(row['hi']):<13}{row['n']:>6}{row['accuracy']:>10.3f}")
    if len(report.get("files", [])) > 1 or len(report.get("by_category", [])) > 1:
        lines += ["", "accuracy by file and category (Wilson 95% interval)"]
        for file in report["files"]:
            for row in [{"category": "(file)", **file}] + file["by_category"]:
                name = Path(file["data"]).name if row["category"] == "(file)" else "  " + row["category"]
                lines.append(f"  {name[:40]:<40}{row['n']:>6}{row['accuracy']:>10.3f}  "
                             f"({row['ci_low']:.3f}-{row['ci_high']:.3f})")
    if "ensemble" in report:
        ens = report["ensemble"]
        lines += ["", f"ensemble of {ens['members']}: member accuracy "
                  + " ".join(f"{a:.3f}" for a in ens["member_accuracy"])
                  + "; accuracy by disagreement (std of the members' margins)",
                  f"  {'std':<17}{'n':>6}{'accuracy':>10}"]
        for row in ens["by_disagreement"]:
            lines.append(f"  {row['lo']:.3f}-{row['hi']:.3f}{'':<5}{row['n']:>6}{row['accuracy']:>10.3f}")
    return "\n".join(lines)


def score_with_progress(rm, examples: list, batch_size: int, progress: bool) -> torch.Tensor:
    """(N,) rewards of tokenised examples, in their order, batched by length exactly as
    `RewardModel.score_examples` batches them, with a progress bar over the batches."""
    return _batched(lambda chunk: rm.score_examples(chunk, batch_size)[None], 1, examples, batch_size, progress)[0]


def member_scores_with_progress(rm, examples: list, batch_size: int, progress: bool) -> torch.Tensor:
    """(K, N) as `score_with_progress`: K = 1 raw rewards of a single model, or the K members'
    standardised scores of an ensemble."""
    if not isinstance(rm, EnsembleRewardModel):
        return score_with_progress(rm, examples, batch_size, progress)[None]
    return _batched(lambda chunk: rm.member_scores_examples(chunk, batch_size), len(rm), examples, batch_size, progress)


def _batched(score_rows, rows: int, examples: list, batch_size: int, progress: bool) -> torch.Tensor:
    """(rows, N) of `score_rows(chunk) -> (rows, len(chunk))` over length-sorted chunks of `examples`."""
    from tqdm.auto import tqdm

    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    out = torch.empty(rows, len(examples))
    for start in tqdm(range(0, len(order), batch_size), desc="scoring", disable=not progress, dynamic_ncols=True):
        batch = order[start : start + batch_size]
        out[:, batch] = score_rows([examples[i] for i in batch])
    return out


def read_with_categories(path: str, skip_bad_rows: bool) -> tuple[list, list[str], int]:
    """(comparisons, the `category` of each ("all" where a row has none), rows skipped) of one file."""
    from ..data.formats import read_categorised_comparisons

    records = read_categorised_comparisons(path, skip_bad_rows=skip_bad_rows)
    return [c for c, _ in records], [cat for _, cat in records], len(records.errors)


def accuracy_by_category(margins: torch.Tensor, categories: list[str]) -> list[dict]:
    """Rows {category, n, accuracy, ci_low, ci_high} (Wilson 95%), categories in sorted order.
    margins: (P,) d; categories: (P,) names."""
    out = []
    for name in sorted(set(categories)):
        index = torch.tensor([c == name for c in categories])
        n, right = int(index.sum()), float((margins[index] > 0).sum())
        low, high = wilson_interval(right, n)
        out.append({"category": name, "n": n, "accuracy": right / n, "ci_low": low, "ci_high": high})
    return out


def accuracy_by_disagreement(margins: torch.Tensor, disagreement: torch.Tensor, bins: int) -> list[dict]:
    """Rows {lo, hi, n, accuracy, mean_margin}: pairs in quantile bins of the ensemble's disagreement
    on them (the members' standard deviation of their margins), lowest first. A useful ensemble is
    right more often where its members agree. margins, disagreement: (P,)."""
    values = disagreement.double()
    cuts = torch.quantile(values, torch.linspace(0, 1, bins + 1, dtype=torch.float64)[1:-1]) if bins > 1 \
        else torch.empty(0, dtype=torch.float64)
    index = torch.bucketize(values, cuts)
    out = []
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            out.append({"lo": float(values[in_bin].min()), "hi": float(values[in_bin].max()), "n": int(in_bin.sum()),
                        "accuracy": float((margins[in_bin] > 0).double().mean()),
                        "mean_margin": float(margins[in_bin].double().mean())})
    return out


def run(cfg: EvalRMConfig) -> Path:
    if cfg.model is None or not cfg.data_files:
        raise ValueError("eval rm needs --model DIR (a reward model, e.g. runs/rm/model) and --data FILE of comparisons")
    if not cfg.progress:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # the "Loading weights" bar of the model load
    rt = runtime.init(cfg, run_dir=False)  # its result is one JSON file, not a run directory
    rm = load_reward_model(cfg.model, device=rt.device, precision=cfg.precision, max_length=cfg.max_length or None)
    files, margin_parts, reward_parts, length_parts, all_categories, skipped = [], [], [], [], [], 0
    for path in cfg.data_files:
        pairs, categories, bad = read_with_categories(path, cfg.skip_bad_rows)
        examples = [rm.tokenize(p.prompt, response) for p in pairs for response in (p.chosen, p.rejected)]
        members = member_scores_with_progress(rm, examples, cfg.batch_size, cfg.progress).view(-1, len(pairs), 2)  # (K, P, 2)
        texts = [conversation_text(p.prompt) for p in pairs]
        prompt_ids = rm.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]  # untruncated: no warning
        margins = (members[..., 0] - members[..., 1]).mean(0)  # (P,) the model's (the ensemble's mean) margin
        right = float((margins > 0).sum())
        low, high = wilson_interval(right, len(pairs))
        files.append({"data": str(path), "n": len(pairs), "skipped_rows": bad, "accuracy": right / len(pairs),
                      "ci_low": low, "ci_high": high, "by_category": accuracy_by_category(margins, categories)})
        margin_parts.append(members[..., 0] - members[..., 1])
        reward_parts.append(members.mean(0))
        length_parts.append(torch.tensor([len(ids) for ids in prompt_ids]))
        all_categories += categories
        skipped += bad
    member_margins = torch.cat(margin_parts, 1)  # (K, P) over every file
    margins, rewards = member_margins.mean(0), torch.cat(reward_parts)

    report = {"model": str(cfg.model), "data": ",".join(cfg.data_files), "skipped_rows": skipped,
              **summarize(margins, torch.cat(length_parts), cfg.calibration_bins, cfg.length_buckets)}
    # Normal-approximation half width (kept for earlier readers) and the Wilson interval.
    report["accuracy_ci95"] = 1.96 * math.sqrt(report["accuracy"] * (1 - report["accuracy"]) / max(report["n"], 1))
    report["ci_low"], report["ci_high"] = wilson_interval(float((margins > 0).sum()), report["n"])
    report["by_category"] = accuracy_by_category(margins, all_categories)
    report["files"] = files
    report["mean_reward_chosen"] = float(rewards[:, 0].mean())
    report["mean_reward_rejected"] = float(rewards[:, 1].mean())
    report["max_length"] = rm.max_length
    if isinstance(rm, EnsembleRewardModel):
        disagreement = member_margins.std(0, correction=0)  # (P,) the members' spread on each pair's margin
        report["ensemble"] = {
            "members": len(rm),
            "member_accuracy": [float((m > 0).double().mean()) for m in member_margins],
            "mean_disagreement": float(disagreement.mean()),
            "by_disagreement": accuracy_by_disagreement(margins, disagreement, cfg.disagreement_bins),
        }
    print(format_report(report))
    out = Path(cfg.out) if cfg.out else Path("runs") / "eval-rm" / (Path(cfg.data_files[0]).name.split(".")[0] + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return out
