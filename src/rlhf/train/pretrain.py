"""`rlhf pretrain`: next-token prediction on a corpus.

With no --model, builds the embedded default: trains a byte-level BPE tokenizer on the corpus
and a small Llama model from `--preset`. With no --data, the corpus is the bundled TinyStories
text and perplexity is measured on its held-out validation excerpt.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import runtime
from ..config import PretrainConfig
from ..data.batches import check_batch
from ..data.formats import read_documents
from ..data.tokenize import count_bytes, tokenize_documents
from ..eval.metrics import bits_per_byte, perplexity
from ..models.load import load_causal_lm, load_tokenizer
from ..models.tiny import build_model, train_tokenizer
from ..resources import TINYSTORIES_TRAIN, TINYSTORIES_VALIDATION
from . import loop
from ..models.lm import dense_lm_loss_sum, score_nll


def _blocks_to_batch(blocks: list[list[int]]) -> dict:
    ids = torch.tensor(blocks, dtype=torch.long)
    return {"input_ids": ids, "loss_mask": torch.ones_like(ids), "n_units": ids.numel() - len(blocks), "n_tokens": ids.numel()}


def run(cfg: PretrainConfig) -> Path:
    data_path = cfg.data or TINYSTORIES_TRAIN
    eval_path = cfg.eval_data or (TINYSTORIES_VALIDATION if cfg.data is None else None)
    # Inputs first: a broken corpus, or one too short to fill a batch of blocks, fails in seconds,
    # before the run directory is created and before the model loads.
    documents = [d.text for d in read_documents(data_path, skip_bad_rows=cfg.skip_bad_rows)]
    eval_documents = [d.text for d in read_documents(eval_path)] if eval_path else []
    # Without --model the tokenizer is part of the model being built, so it is trained (and saved) with it.
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code) if cfg.model else train_tokenizer(documents,
                                                                                                   cfg.vocab_size)
    blocks = tokenize_documents(tokenizer, documents, cfg.max_length)
    check_batch(len(blocks), cfg.batch_size, runtime.dist.world_size(),
                f"blocks of --max-length {cfg.max_length} tokens", Path(data_path).name)
    rt = runtime.init(cfg)
    device = rt.device

    model = load_causal_lm(cfg.model, cfg.trust_remote_code) if cfg.model else build_model(cfg.preset, tokenizer)
    if cfg.compile:
        model.config._attn_implementation = "eager"  # compiles into fused kernels; faster than SDPA on CPU here
    model.to(device)

    plan = loop.BatchPlan(len(blocks), cfg.batch_size, cfg.seed)
    forward_model = torch.compile(model, dynamic=False) if cfg.compile else model

    eval_blocks = tokenize_documents(tokenizer, eval_documents, cfg.max_length) if eval_documents else []
    # Blocks drop the stream's last partial block, so the bytes scored are (almost) all of them.
    eval_bytes = count_bytes(eval_documents)

    def evaluate() -> dict:
        if not eval_blocks:
            return {}
        batches = (_blocks_to_batch(eval_blocks[i : i + cfg.batch_size]) for i in range(0, len(eval_blocks), cfg.batch_size))
        nll, n = score_nll(model, batches, device, rt.autocast)
        return {"eval_loss": nll / n, "eval_perplexity": perplexity(nll, n), "eval_bits_per_byte": bits_per_byte(nll, eval_bytes)}

    result = loop.fit(rt, model, lambda i: _blocks_to_batch([blocks[j] for j in plan.micro_batch(i)]), plan,
                      dense_lm_loss_sum, evaluate=evaluate, forward_model=forward_model, desc="pretrain")
    final_eval = evaluate()
    samples = write_samples(rt, model, tokenizer, eval_documents or documents)
    return rt.finish(model, tokenizer, {
        "stage": "pretrain",
        "steps": result.steps,
        "skipped_steps": result.skipped_steps,  # non-finite loss or gradient: update skipped
        "train_tokens": result.tokens,
        "train_loss": result.last_metrics.get("loss"),
        **final_eval,
        "eval_tokens": len(eval_blocks) * cfg.max_length,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "tokens_per_s": result.tokens_per_s,
        "train_wall_s": result.wall_s,
        "samples": samples,
    })


@torch.no_grad()
def write_samples(rt: runtime.Runtime, model, tokenizer, documents: list[str]) -> list[dict]:
    """Sample continuations of a few story openings (first words of held-out documents) into
    OUT/samples.md."""
    cfg, device, path = rt.cfg, rt.device, rt.path / "samples.md"
    openings = [" ".join(d.split()[:6]) for d in documents if len(d.split()) > 12][: cfg.num_samples]
    generator_seed = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator_seed)))
    samples = []
    lines = ["# Samples\n", f"Temperature 0.8, top-k 50, from the model in `{path.parent.name}/model`.\n"]
    for opening in openings:
        ids = tokenizer(opening, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=120, do_sample=True, temperature=0.8, top_k=50,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        continuation = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        samples.append({"prompt": opening, "continuation": continuation})
        lines.append(f"\n**{opening}**{continuation}\n")
    if rt.is_main:  # every rank samples the same; one writes
        path.write_text("".join(lines), encoding="utf-8")
    return samples
