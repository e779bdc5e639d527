"""Sequence log-probabilities, reference log-probabilities and KL to a reference: what the DPO
family (offline and online) asks of a causal LM.

`sequence_logps` runs the LM head only at response positions (like `lm.target_logits`) and sums
the token log-probabilities of each row. Reference log-probabilities are computed once, in a
no-grad pass under the training precision, and cached in the run directory keyed by a
fingerprint of the reference's weights and the tokens, so a resumed run reuses them instead of
recomputing, and a reference directory whose weights changed is scored again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from ..algos.logprobs import token_logprobs
from ..data.collate import collate_completions
from ..data.tokenize import TokenizedExample
from ..models.lm import target_logits
from ..runtime import dist
from ..runtime.files import fsync_dir

LOGPROB_CHUNK_ROWS = 1024  # target rows upcast to fp32 at a time when taking log-softmax


def sequence_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log pi(response | prompt) of each row, and its number of response tokens.

    batch: input_ids, attention_mask, loss_mask (R, T), loss_mask 1 on response tokens.
    Returns logps (R,) fp32 (differentiable) and lengths (R,) int64.
    """
    logits, labels = target_logits(model, batch)  # (N, V), (N,) over the N response tokens
    targets = batch["loss_mask"][:, 1:].bool()  # position t predicts token t + 1
    rows = targets.nonzero(as_tuple=True)[0]  # (N,) row of each target, in the order of the gather
    token_logps = token_logprobs(logits, labels, chunk_size=LOGPROB_CHUNK_ROWS)  # (N,) fp32
    sums = token_logps.new_zeros(targets.shape[0]).index_add(0, rows, token_logps)
    return sums, targets.sum(1)


def reference_context(model, reference):
    """A context in which `reference` scores like the reference policy: the separate model, or
    (reference None) `model` itself with its LoRA adapter disabled, or as it is now when it has
    no adapter (before any training step the policy is its own reference)."""
    if reference is not None:
        return contextlib.nullcontext(reference)
    if hasattr(model, "disable_adapter"):
        return _yield_after(model.disable_adapter(), model)
    return contextlib.nullcontext(model)


@contextlib.contextmanager
def _yield_after(ctx, value):
    with ctx:
        yield value


@torch.no_grad()
def score_examples(model, examples: Sequence[TokenizedExample], pad_id: int, batch_size: int, device,
                   autocast: Callable[[], contextlib.AbstractContextManager]) -> torch.Tensor:
    """Summed response log-probs (n,) of tokenized examples, scored `batch_size` rows at a time
    (longest first, so padding is small), in no-grad eval mode."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    out = torch.zeros(len(examples), dtype=torch.float32)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collate_completions([examples[i] for i in idx], pad_id).items()}
            with autocast():
                logps, _ = sequence_logps(model, batch)
            out[idx] = logps.float().cpu()
    finally:
        model.train(was_training)
    return out


def fingerprint(*parts) -> str:
    """A short stable hash of JSON-serialisable parts (model paths, options, token ids)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def cached_reference_logps(path: Path, name: str, key: str, compute: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, bool]:
    """Reference log-probs `name` from the cache file at `path` when stored under the same `key`,
    else `compute()` them and store them (atomically). Returns (logps, True if from the cache)."""
    cache = torch.load(path, weights_only=True) if path.exists() else {}
    entry = cache.get(name)
    if entry is not None and entry["key"] == key:
        return entry["logps"], True
    logps = compute()
    if not dist.is_main():  # every rank computes the same numbers; one writes them
        return logps, False
    cache[name] = {"key": key, "logps": logps}
    tmp = path.with_suffix(".tmp")
    torch.save(cache, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)
    return logps, False


@torch.no_grad()
def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's weights (every state_dict entry's name, dtype, shape and bytes):
    what identifies a reference, whatever path it was loaded from. About a second per GB. A
    sharded entry (FSDP2's DTensor) is gathered whole first, one at a time, so that every rank
    computes the same hash (collective then: every rank calls it)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()[:16]


def examples_fingerprint(examples: Iterable[TokenizedExample]) -> str:
    return fingerprint([e.input_ids for e in examples], [e.prompt_len for e in examples])


@torch.no_grad()
def sampled_kl(model, reference_ctx, tokenizer, prompts, sampling, seed: int, batch_size: int, device,
               autocast, max_prompt_tokens: int | None = None) -> dict:
    """KL(policy || reference) on the policy's own samples y ~ pi(.|x), as the mean over prompts of
    `kl`: the exact KL of the two next-token distributions summed over the response
    (`rlhf.eval.policy.kl_estimates`; unbiased for the KL of the response distributions, never negative),
    and `kl_k1`: log pi(y|x) - log pi_ref(y|x), the sampled k1 estimate (unbiased too, but negative
    on some samples and, near KL 0, often in the mean); and the mean response length in tokens.
    Sample with temperature 1 for the estimate to mean anything.

    reference_ctx: zero-argument callable returning a context that yields the reference model
    (see `reference_context`), entered for each batch once it is scored under the policy.
    """
    from ..data.tokenize import encode_prompt
    from ..eval.policy import kl_estimates
    from ..rollout.generate import generate, stop_token_ids
    from ..rollout.logprobs import response_logits

    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    stops = stop_token_ids(tokenizer, model)
    # Prompts keep their last tokens so that prompt + response fits the model's positions.
    encoded = [encode_prompt(tokenizer, p)[-max_prompt_tokens:] if max_prompt_tokens else encode_prompt(tokenizer, p)
               for p in prompts]
    exact, k1, lengths = [], [], []
    try:
        for start in range(0, len(encoded), batch_size):
            with autocast():
                rollout = generate(model, encoded[start : start + batch_size], sampling, stops, tokenizer.pad_token_id,
                                   generator)
                logits = response_logits(model, rollout)
            with reference_ctx() as reference, autocast():
                was_ref_training = reference.training
                reference.eval()
                ref_logits = response_logits(reference, rollout)
                reference.train(was_ref_training)
            batch_exact, batch_k1 = kl_estimates(logits, ref_logits, rollout)
            exact.append(batch_exact)
            k1.append(batch_k1)
            lengths.append(rollout.response_mask.sum(1).float())
    finally:
        model.train(was_training)
    return {"kl": float(torch.cat(exact).mean()), "kl_k1": float(torch.cat(k1).mean()),
            "response_length": float(torch.cat(lengths).mean())}
