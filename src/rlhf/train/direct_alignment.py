"""What offline and online DPO share: tokenized preference data (pairs, or thumbs for KTO), the
loss of each `--loss`, the reference policy and its cached log-probabilities, and evaluation
(held-out preference loss and KL to the reference on sampled responses)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import runtime
from ..algos.preference import LOSSES, PAIRWISE_LOSSES, kto_reference_point
from ..config import DPOConfig
from ..data.collate import collate_completions, collate_pairs
from ..data.formats import read_comparisons, read_feedback
from ..data.records import BinaryFeedback
from ..data.tokenize import TokenizedPair, mismatched_partners, tokenize_completion, tokenize_pair
from ..models import compat
from ..models.load import load_causal_lm, resolve_model_dir
from ..rollout.attention import use_fp32_attention
from .preference_lm import (
    cached_reference_logps,
    examples_fingerprint,
    fingerprint,
    reference_context,
    sampled_kl,
    score_examples,
    sequence_logps,
    weights_fingerprint,
)

REFERENCE_CACHE = "reference_logps.pt"


# ---------------------------------------------------------------- data


class PairData:
    """Tokenized comparisons and their reference log-probs `ref` (n, 2): [chosen, rejected]."""

    def __init__(self, pairs: list[TokenizedPair]):
        self.pairs, self.ref = pairs, None

    def __len__(self) -> int:
        return len(self.pairs)

    def examples(self) -> list:
        return [p.chosen for p in self.pairs] + [p.rejected for p in self.pairs]

    def set_reference(self, logps: torch.Tensor) -> None:  # logps (2n,) in the order of examples()
        self.ref = logps.view(2, -1).T.contiguous()

    def lengths(self) -> list[int]:
        return [max(len(p.chosen.input_ids), len(p.rejected.input_ids)) for p in self.pairs]

    def batch(self, idx: list[int], pad_id: int) -> dict:
        batch = collate_pairs([self.pairs[i] for i in idx], pad_id)
        batch["ref_logps"] = self.ref[idx]  # (B, 2)
        batch["n_units"] = len(idx)
        batch["n_tokens"] = int(batch["attention_mask"].sum())
        return batch


class FeedbackData:
    """Tokenized thumbs up/down for KTO, each also paired with another example's response (the
    mismatched pair of KTO's reference point); `ref` (n, 2): [matched, mismatched]."""

    def __init__(self, tokenizer, feedback: list[BinaryFeedback], max_length: int, seed: int):
        partner = mismatched_partners([f.prompt for f in feedback], seed)
        self.matched = [tokenize_completion(tokenizer, f.prompt, f.completion, max_length) for f in feedback]
        self.mismatched = [tokenize_completion(tokenizer, f.prompt, feedback[j].completion, max_length)
                           for f, j in zip(feedback, partner)]
        self.labels = torch.tensor([f.label for f in feedback])
        self.ref = None

    def __len__(self) -> int:
        return len(self.matched)

    def examples(self) -> list:
        return self.matched + self.mismatched

    def set_reference(self, logps: torch.Tensor) -> None:
        self.ref = logps.view(2, -1).T.contiguous()

    def lengths(self) -> list[int]:
        return [len(e.input_ids) for e in self.matched]

    def batch(self, idx: list[int], pad_id: int) -> dict:
        batch = collate_completions([self.matched[i] for i in idx], pad_id)
        mismatched = collate_completions([self.mismatched[i] for i in idx], pad_id)
        batch.update({f"kl_{k}": v for k, v in mismatched.items()})
        batch.update(labels=self.labels[idx], ref_logps=self.ref[idx], n_units=len(idx),
                     n_tokens=int(batch["attention_mask"].sum() + mismatched["attention_mask"].sum()))
        return batch


def load_data(cfg: DPOConfig, path: str, tokenizer, skip_bad_rows: bool) -> PairData | FeedbackData:
    """The tokenized training (or eval) data of the stage's loss; `.skipped` counts dropped bad rows."""
    if cfg.loss == "kto":
        records = read_feedback(path, skip_bad_rows=skip_bad_rows)
        data = FeedbackData(tokenizer, records, cfg.max_length, cfg.seed)
    else:
        records = read_comparisons(path, skip_bad_rows=skip_bad_rows)
        data = PairData([tokenize_pair(tokenizer, c.prompt, c.chosen, c.rejected, cfg.max_length) for c in records])
    data.skipped = getattr(records, "skipped", 0)
    return data


# ---------------------------------------------------------------- losses


def _mean(x: torch.Tensor) -> torch.Tensor:
    return x.float().mean().detach()


def pairwise_loss(name: str, options: dict, nll_weight: float):
    """loss_fn(model, batch) -> (summed loss, stats) for a pairwise loss of `PAIRWISE_LOSSES`,
    plus `nll_weight` times the chosen response's per-token NLL (ORPO's SFT term, RPO)."""
    loss_fn = PAIRWISE_LOSSES[name]

    def compute(model, batch: dict) -> tuple[torch.Tensor, dict]:
        logps, lengths = sequence_logps(model, batch)  # (2B,): chosen rows, then rejected rows
        n = batch["n_units"]
        chosen, rejected = logps[:n], logps[n:]
        chosen_len, rejected_len = lengths[:n].float(), lengths[n:].float()
        ref = batch["ref_logps"]
        losses, chosen_r, rejected_r = loss_fn(chosen, rejected, ref[:, 0], ref[:, 1], chosen_lengths=chosen_len,
                                               rejected_lengths=rejected_len, **options)
        nll = -chosen / chosen_len.clamp(min=1)
        if nll_weight:
            losses = losses + nll_weight * nll
        stats = {"reward_chosen": _mean(chosen_r), "reward_rejected": _mean(rejected_r),
                 "reward_accuracy": _mean(chosen_r > rejected_r), "reward_margin": _mean(chosen_r - rejected_r),
                 "logp_chosen": _mean(chosen), "logp_rejected": _mean(rejected), "nll_chosen": _mean(nll)}
        return losses.sum(), stats

    return compute


def kto_loss(options: dict):
    """loss_fn(model, batch) for KTO: the reference point z0 comes from the batch's mismatched
    pairs, scored in a separate no-grad forward (z0 is detached anyway)."""
    loss_fn = LOSSES["kto"]

    def compute(model, batch: dict) -> tuple[torch.Tensor, dict]:
        logps, _ = sequence_logps(model, batch)
        with torch.no_grad():
            kl_batch = {k[3:]: v for k, v in batch.items() if k.startswith("kl_")}
            kl_logps, _ = sequence_logps(model, kl_batch)
        ref = batch["ref_logps"]
        z0 = kto_reference_point(kl_logps, ref[:, 1])
        losses, rewards = loss_fn(logps, ref[:, 0], batch["labels"], z0, **options)
        good = batch["labels"].bool()
        stats = {"kl_reference_point": z0, "desirable_fraction": _mean(good)}
        if good.any():
            stats.update(reward_desirable=_mean(rewards[good]), logp_desirable=_mean(logps[good]))
        if (~good).any():
            stats.update(reward_undesirable=_mean(rewards[~good]), logp_undesirable=_mean(logps[~good]))
        return losses.sum(), stats

    return compute


def make_loss(cfg: DPOConfig):
    if cfg.loss == "kto":
        return kto_loss(cfg.loss_options)
    return pairwise_loss(cfg.loss, cfg.loss_options, cfg.chosen_nll_weight)


# ---------------------------------------------------------------- reference


def reference_dir(cfg: DPOConfig) -> Path:
    return resolve_model_dir(cfg.reference or cfg.model).resolve()


def separate_reference(cfg: DPOConfig) -> bool:
    """Whether the reference is another model than the starting policy."""
    return cfg.reference is not None and reference_dir(cfg) != resolve_model_dir(cfg.model).resolve()


class Reference:
    """The reference policy, loaded only when something needs it: the starting policy itself
    before training (no copy), else a frozen model loaded once on first use (or, with LoRA, the
    policy with its adapter disabled). `prepare_frozen`: what the frozen model goes through once
    loaded (online DPO's `Runtime.prepare_frozen`, which shards it under `--sharding fsdp2`:
    every rank then scores the same rows with it, as `attach_reference` and `sampled_kl` do)."""

    def __init__(self, cfg: DPOConfig, model, device, prepare_frozen=None):
        self.cfg, self.model, self.device, self.frozen = cfg, model, device, None
        self.prepare_frozen = prepare_frozen
        compat.check_shared_tokenizer(cfg.model, cfg.reference, "--reference", cfg.trust_remote_code)

    def context(self, before_training: bool = False):
        if self.frozen is None and (separate_reference(self.cfg) or not (before_training or self.cfg.lora_r > 0)):
            self.frozen = load_causal_lm(reference_dir(self.cfg), self.cfg.trust_remote_code).to(self.device).eval()
            self.frozen.requires_grad_(False)
            use_fp32_attention(self.frozen)  # CPU only: see rlhf.rollout.attention
            if self.prepare_frozen is not None:
                self.prepare_frozen(reference=self.frozen)
        return reference_context(self.model, self.frozen)


def attach_reference(data, name: str, cfg: DPOConfig, ref_ctx, run_dir: runtime.RunDir, pad_id: int,
                     device) -> tuple[float, bool]:
    """Fill `data.ref` from the run directory's cache, or by scoring `data` under the model that
    the context `ref_ctx()` yields (no grad, training precision) and caching the result; the
    cache key covers the reference's weights (not its path: a directory retrained in place is
    scored again), the precision and the tokens.
    Returns (seconds spent, whether the cache was used)."""
    t0 = time.perf_counter()
    examples = data.examples()
    with ref_ctx() as ref_model:
        reference_weights = weights_fingerprint(ref_model)
    key = fingerprint(reference_weights, cfg.precision, examples_fingerprint(examples))

    def compute() -> torch.Tensor:
        with ref_ctx() as ref_model:
            return score_examples(ref_model, examples, pad_id, 2 * cfg.batch_size, device,
                                  lambda: runtime.autocast(cfg.precision, device))

    logps, cached = cached_reference_logps(run_dir.path / REFERENCE_CACHE, name, key, compute)
    data.set_reference(logps)
    return time.perf_counter() - t0, cached


# ---------------------------------------------------------------- evaluation


def kl_prompts(cfg: DPOConfig, skip_bad_rows: bool) -> list:
    """Up to `kl_prompts` distinct prompts of the eval data (else the training data), in file order."""
    if cfg.kl_prompts == 0:
        return []
    path = cfg.eval_data or cfg.data
    read = read_feedback if cfg.loss == "kto" else read_comparisons
    records = read(path, skip_bad_rows=skip_bad_rows)
    prompts = list(dict.fromkeys(r.prompt for r in records))
    return prompts[: cfg.kl_prompts]


@torch.no_grad()
def preference_eval(loss_fn, data, cfg: DPOConfig, model, pad_id: int, device) -> dict:
    """Loss of the held-out data (mean per unit) and its statistics (each the mean over the
    batches that report it: a kto batch without desirable examples has no reward_desirable)."""
    totals, counts, units, loss_sum = {}, {}, 0, 0.0
    for start in range(0, len(data), cfg.batch_size):
        batch = data.batch(list(range(start, min(start + cfg.batch_size, len(data)))), pad_id)
        batch = runtime.to_device(batch, device)
        with runtime.autocast(cfg.precision, device):
            loss, stats = loss_fn(model, batch)
        loss_sum, units = loss_sum + float(loss), units + batch["n_units"]
        for k, v in stats.items():
            totals[k], counts[k] = totals.get(k, 0.0) + float(v), counts.get(k, 0) + 1
    return {"eval_loss": loss_sum / units, **{f"eval_{k}": v / counts[k] for k, v in totals.items()}}


def make_evaluate(cfg: DPOConfig, model, tokenizer, loss_fn, eval_data, prompts, reference: Reference, device):
    from ..rollout.generate import SamplingConfig

    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=1.0)

    def evaluate() -> dict:
        out = {}
        if eval_data is not None:
            out.update(preference_eval(loss_fn, eval_data, cfg, model, tokenizer.pad_token_id, device))
        if prompts:
            out.update(sampled_kl(model, reference.context, tokenizer, prompts, sampling, cfg.seed, 2 * cfg.batch_size,
                                  device, lambda: runtime.autocast(cfg.precision, device),
                                  max_prompt_tokens=max(1, cfg.max_length - cfg.max_new_tokens)))
        return out

    return evaluate
