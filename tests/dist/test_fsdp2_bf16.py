"""`--sharding fsdp2 --precision bf16` on two CPU processes (gloo), run where bf16 is native (a CPU
with avx512_bf16 or amx_bf16): FSDP2's mixed precision (parameters gathered and computed with in
bf16, gradients reduced in fp32 into the fp32 shards the optimiser steps) against one process
with `--precision bf16` (autocast over fp32 weights), at the same global batch.

The two do not compute the same thing to the last bit, as fp32 runs do (tests/dist/test_fsdp2.py,
1e-4): under FSDP2's policy every parameter is cast to bf16, norms and embeddings included, so the
residual stream is bf16 too, where autocast keeps it and the norms in fp32. The tolerances come
from measurement (2026-12-08, 2-core AMD EPYC with avx512_bf16, load average 5 to 8; the tiny
Llama, 4 steps, lr 1e-3):

- loss: sft differed by at most 1.1e-3 per step (losses near 5.5), dpo by 3.4e-4 (near 0.65); one
  process in bf16 against one in fp32 differed by 2.3e-4 and 3.5e-4. Tolerance 5e-3.
- gradient norm: at most 1.4e-3 relative. Tolerance 1e-2.
- weights after 4 steps: the two runs' difference (global L2 norm) was 3.1% (sft) and 4.9% (dpo)
  of how far the weights moved, as large as one process's bf16 run is from its fp32 run (3.2%,
  4.5%): AdamW moves a parameter of near-zero gradient by about lr whatever the gradient's size,
  so bf16 rounding that flips its sign moves it the other way. Tolerance 10%.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from dist_launch import equality_args, metrics, needs_gloo, run

from rlhf.runtime.device import bf16_supported

pytestmark = [
    needs_gloo,
    pytest.mark.skipif(not bf16_supported(torch.device("cpu")),
                       reason="bf16 is not native on this CPU (no avx512_bf16 or amx_bf16 flag, or no oneDNN): "
                              "--precision bf16 runs in fp32 here"),
]

LOSS_ATOL, GRAD_NORM_RTOL, WEIGHTS_RTOL = 5e-3, 1e-2, 0.1


def weights(path):
    return load_file(str(path / "model.safetensors"))


def distance(a: dict, b: dict) -> float:
    """The L2 norm of the difference of two state dicts, over every tensor."""
    return math.sqrt(sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in a))


@pytest.mark.parametrize("stage, data", [("sft", "demonstrations_file"), ("dpo", "pairs_file")])
def test_bf16_fsdp2_two_processes_match_one_within_bf16(stage, data, tiny_model_dir, request, tmp_path):
    extra = ["--batch-size", "4"] + (["--grad-accum", "2"] if stage == "sft" else ["--kl-prompts", "0"])
    args = lambda out: [stage, *equality_args(tiny_model_dir, request.getfixturevalue(data), out),  # noqa: E731
                        *extra, "--precision", "bf16"]  # after equality_args' fp32: the last one counts
    one, two = tmp_path / "one", tmp_path / "two"
    run(args(one))
    run([*args(two), "--sharding", "fsdp2"], nproc=2)
    first, second = metrics(one), metrics(two)
    assert [m["step"] for m in second] == [m["step"] for m in first] == [1, 2, 3, 4]
    for a, b in zip(first, second):
        assert math.isfinite(b["loss"]) and math.isfinite(b["grad_norm"])
        assert b["loss"] == pytest.approx(a["loss"], abs=LOSS_ATOL), (a, b)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=GRAD_NORM_RTOL), (a, b)
        assert b["tokens"] == a["tokens"]
    start, w_one, w_two = weights(tiny_model_dir), weights(one / "model"), weights(two / "model")
    assert {t.dtype for t in w_two.values()} == {torch.float32}  # the fp32 shards, not the bf16 compute copies
    assert w_two.keys() == w_one.keys()
    moved = distance(w_one, start)
    assert moved > 0 and distance(w_two, start) > 0
    assert distance(w_two, w_one) <= WEIGHTS_RTOL * moved, (distance(w_two, w_one), moved)
    summaries = [json.loads((out / "summary.json").read_text()) for out in (one, two)]
    assert [s["precision"] for s in summaries] == ["bf16", "bf16"]  # native here: not fallen back to fp32
    assert (summaries[1]["processes"], summaries[1]["sharding"]) == (2, "fsdp2")
