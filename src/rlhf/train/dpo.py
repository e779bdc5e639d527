"""`rlhf dpo`: direct alignment from preferences, one stage for the whole family.

    --loss dpo | cdpo | ipo | simpo | orpo   on comparisons {"prompt", "chosen", "rejected"}
    --loss kto                               on binary feedback {"prompt", "completion", "label"}
                                             (or comparisons, split into thumbs up and down)
    --online                                 samples and labels its own pairs (`online_dpo`)

Each loss is a pure function of `rlhf.algos.preference`; this file only feeds it. The chosen and
rejected responses of a micro-batch go through the model in one forward pass (2B rows), and the
LM head runs only at response positions. Reference log-probabilities are computed once before
training, in a no-grad pass, and cached in the run directory (`reference_logps.pt`, reused on
--resume); no reference model is held during training. The reference is the starting policy
itself (with LoRA, the policy with its adapter disabled) unless --reference names another model.
KL to the reference is measured at eval steps and at the end on responses sampled from the policy.
"""

from __future__ import annotations

from pathlib import Path

from .. import runtime
from ..config import DPOConfig
from ..data.batches import check_batch
from ..models.load import load_policy, load_tokenizer
from ..rollout.attention import use_fp32_attention
from . import loop
from .direct_alignment import Reference, attach_reference, kl_prompts, load_data, make_evaluate, make_loss


# ---------------------------------------------------------------- the stage


def run(cfg: DPOConfig) -> Path:
    if cfg.online:
        from . import online_dpo

        return online_dpo.run(cfg)
    if cfg.model is None or cfg.data is None:
        raise ValueError("dpo needs --model DIR (the SFT policy) and --data FILE of comparisons (kto: binary feedback)")
    # Inputs first: a broken data file fails in seconds, before the run directory and the model.
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    data = load_data(cfg, cfg.data, tokenizer, cfg.skip_bad_rows)
    eval_data = load_data(cfg, cfg.eval_data, tokenizer, False) if cfg.eval_data else None
    check_batch(len(data), cfg.batch_size, runtime.dist.world_size(),
                "completions (thumbs up and down)" if cfg.loss == "kto" else "comparisons", Path(cfg.data).name)
    rt = runtime.init(cfg)
    device = rt.device
    model, tokenizer = load_policy(cfg, device, tokenizer)
    use_fp32_attention(model)  # CPU only: bf16 attention kernels are slower there (rlhf.rollout.attention)
    pad_id = tokenizer.pad_token_id
    reference = Reference(cfg, model, device, rt.prepare_frozen)  # a separate --reference: sharded under fsdp2
    ref_ctx = lambda: reference.context(before_training=True)  # noqa: E731  (fit has not started)
    reference_s, cached = attach_reference(data, "train", cfg, ref_ctx, rt.run_dir, pad_id, device)
    if eval_data is not None:
        reference_s += attach_reference(eval_data, "eval", cfg, ref_ctx, rt.run_dir, pad_id, device)[0]

    # Length often tracks the label of unpaired feedback, so kto batches are not grouped by length.
    grouped = cfg.group_by_length and cfg.loss != "kto"
    plan = loop.BatchPlan(len(data), cfg.batch_size, cfg.seed, lengths=data.lengths() if grouped else None)
    loss_fn = make_loss(cfg)
    evaluate = make_evaluate(cfg, model, tokenizer, loss_fn, eval_data, kl_prompts(cfg, cfg.skip_bad_rows), reference,
                             device)
    result = loop.fit(rt, model, lambda i: data.batch(plan.micro_batch(i), pad_id), plan, loss_fn, evaluate=evaluate,
                      desc=f"dpo ({cfg.loss})")
    train_figures = {k: v for k, v in result.last_metrics.items() if k not in ("step", "lr", "elapsed_s", "tokens")}
    return rt.finish(model, tokenizer, {
        "stage": "dpo",
        "loss_type": cfg.loss,
        **cfg.loss_options,
        "steps": result.steps,
        "skipped_steps": result.skipped_steps,  # non-finite loss or gradient: update skipped
        "examples": len(data),
        "skipped_rows": data.skipped,
        **{f"train_{k}": v for k, v in train_figures.items() if k != "tokens_per_s"},
        **evaluate(),
        "reference_s": reference_s,
        "reference_cached": cached,
        "train_tokens": result.tokens,
        "tokens_per_s": result.tokens_per_s,
        "train_wall_s": result.wall_s,
    })
