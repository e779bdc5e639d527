"""DPO's cached reference log-probs are keyed by the reference's weights, not its path (issue 11, item 4)."""

from __future__ import annotations

import contextlib

import torch


def test_reference_retrained_in_place_is_scored_again(tmp_path, tiny_model_dir):
    from rlhf.config import DPOConfig
    from rlhf.data.tokenize import tokenize_pair
    from rlhf.models.load import load_causal_lm, load_tokenizer
    from rlhf.runtime import RunDir
    from rlhf.train.direct_alignment import PairData, attach_reference

    tokenizer = load_tokenizer(tiny_model_dir)
    reference = load_causal_lm(tiny_model_dir)
    cfg = DPOConfig(model=str(tiny_model_dir), data="unused.jsonl", out=str(tmp_path / "run"), precision="fp32",
                    batch_size=2)
    run = RunDir(cfg)
    pairs = [tokenize_pair(tokenizer, f"Story {i}:", " a happy dog.", " a sad cat.", 32) for i in range(3)]

    def attach() -> tuple[torch.Tensor, bool]:
        data = PairData(pairs)
        _, cached = attach_reference(data, "train", cfg, lambda: contextlib.nullcontext(reference), run,
                                     tokenizer.pad_token_id, torch.device("cpu"))
        return data.ref, cached

    first, cached = attach()
    assert not cached
    assert attach()[1]  # same weights, same tokens: from the cache

    with torch.no_grad():  # the reference directory was retrained: same path, other weights
        reference.get_input_embeddings().weight.mul_(1.5)
    changed, cached = attach()
    assert not cached and not torch.allclose(changed, first)
