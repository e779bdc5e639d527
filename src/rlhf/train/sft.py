"""`rlhf sft`: supervised fine-tuning on demonstrations.

Cross-entropy on completion tokens only: prompt tokens are inputs, never targets (their loss
mask is 0, see `rlhf.data.tokenize`). With --packing, several demonstrations share a row and
restarting position ids keep each one's attention to itself.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import runtime
from ..config import SFTConfig
from ..data.collate import collate_completions, pack_completions, pad_right
from ..data.formats import read_demonstrations
from ..data.tokenize import TokenizedExample, tokenize_completion
from ..data.batches import check_batch
from ..models.load import load_policy, load_tokenizer, resolve_model_dir
from . import loop
from ..models.lm import lm_loss_sum, score_nll


def tokenize_demonstrations(tokenizer, demonstrations, max_length: int) -> list[TokenizedExample]:
    return [tokenize_completion(tokenizer, d.prompt, d.completion, max_length) for d in demonstrations]


def make_batch(examples: list[TokenizedExample], pad_id: int) -> dict:
    batch = collate_completions(examples, pad_id)
    batch["n_units"] = int(batch["loss_mask"][:, 1:].sum())
    batch["n_tokens"] = int(batch["attention_mask"].sum())
    return batch


def make_packed_batch(rows: list[dict], pad_id: int) -> dict:
    """Packed rows carry no attention mask: transformers reads the example boundaries from the
    restarting position ids and builds a block-diagonal causal mask."""
    ids = pad_right([r["input_ids"] for r in rows], pad_id, 8)
    # Padding continues as its own pseudo-example (positions from 0) and is masked out of the loss.
    positions = pad_right([r["position_ids"] + list(range(ids.shape[1] - len(r["position_ids"]))) for r in rows], 0)
    loss_mask = pad_right([r["loss_mask"] for r in rows], 0, 8)
    return {"input_ids": ids, "position_ids": positions, "loss_mask": loss_mask,
            "n_units": int(loss_mask[:, 1:].sum()), "n_tokens": sum(len(r["input_ids"]) for r in rows)}


def run(cfg: SFTConfig) -> Path:
    if cfg.model is None or cfg.data is None:
        raise ValueError("sft needs --model DIR (e.g. runs/pretrain/model) and --data FILE of demonstrations")
    # Inputs first: a broken data file or model directory, or data that cannot fill a batch, fail
    # in seconds, before the run directory is created and before the model loads.
    resolve_model_dir(cfg.model)
    demonstrations = read_demonstrations(cfg.data, skip_bad_rows=cfg.skip_bad_rows)
    eval_demonstrations = read_demonstrations(cfg.eval_data) if cfg.eval_data else []
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    pad_id = tokenizer.pad_token_id
    examples = tokenize_demonstrations(tokenizer, demonstrations, cfg.max_length)
    if cfg.packing:
        units = pack_completions(examples, cfg.max_length)
        batch_of = lambda idx: make_packed_batch([units[j] for j in idx], pad_id)  # noqa: E731
    else:
        units = examples
        batch_of = lambda idx: make_batch([units[j] for j in idx], pad_id)  # noqa: E731
    what = f"packed rows of --max-length {cfg.max_length} (from {len(examples)} demonstrations)" if cfg.packing \
        else "demonstrations"
    check_batch(len(units), cfg.batch_size, runtime.dist.world_size(), what, Path(cfg.data).name)
    rt = runtime.init(cfg)
    device = rt.device
    model, tokenizer = load_policy(cfg, device, tokenizer)

    lengths = [len(u.input_ids) if not cfg.packing else len(u["input_ids"]) for u in units]
    plan = loop.BatchPlan(len(units), cfg.batch_size, cfg.seed, lengths=lengths if cfg.group_by_length else None)

    eval_examples = []
    if cfg.eval_data:
        eval_examples = tokenize_demonstrations(tokenizer, eval_demonstrations, cfg.max_length)

    def evaluate() -> dict:
        if not eval_examples:
            return {}
        batches = (make_batch(eval_examples[i : i + cfg.batch_size], pad_id) for i in range(0, len(eval_examples), cfg.batch_size))
        nll, n = score_nll(model, batches, device, rt.autocast)
        return {"eval_loss": nll / n, "eval_perplexity": float(torch.tensor(nll / n).exp())}

    result = loop.fit(rt, model, lambda i: batch_of(plan.micro_batch(i)), plan, lm_loss_sum, evaluate=evaluate,
                      desc="sft")
    return rt.finish(model, tokenizer, {
        "stage": "sft",
        "steps": result.steps,
        "skipped_steps": result.skipped_steps,  # non-finite loss or gradient: update skipped
        "examples": len(examples),
        "skipped_rows": getattr(demonstrations, "skipped", 0),
        "train_loss": result.last_metrics.get("loss"),
        "train_tokens": result.tokens,
        "tokens_per_s": result.tokens_per_s,
        "train_wall_s": result.wall_s,
        **evaluate(),
    })
