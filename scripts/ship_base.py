"""Store a pretrained base model inside the package (src/rlhf/resources/base) for `rlhf demo`.

    rlhf pretrain --preset small --out runs/base      # about 8 minutes on 2 CPU cores
    python scripts/ship_base.py runs/base

The weights are stored in bf16 (half the bytes; every stage loads them back into fp32), with the
tokenizer and the pretraining summary, so the demo needs neither the network nor a pretraining run.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch

from rlhf.models.load import load_causal_lm, load_tokenizer
from rlhf.resources import BASE_MODEL


def main(run_dir: str) -> None:
    run = Path(run_dir)
    model = load_causal_lm(run / "model").to(torch.bfloat16)
    tokenizer = load_tokenizer(run / "model")
    if BASE_MODEL.exists():
        shutil.rmtree(BASE_MODEL)
    model.save_pretrained(BASE_MODEL)
    tokenizer.save_pretrained(BASE_MODEL)
    summary = json.loads((run / "summary.json").read_text())
    config = (run / "config.yaml").read_text()
    (BASE_MODEL / "PROVENANCE.md").write_text(
        "# The demo's base model\n\n"
        "A Llama-architecture model (preset `small`) and byte-level BPE tokenizer trained from scratch by\n"
        "`rlhf pretrain --preset small` on the bundled TinyStories text (../tinystories/PROVENANCE.md:\n"
        "CDLA-Sharing-1.0), stored in bf16 by `scripts/ship_base.py`. Rebuild:\n\n"
        "    rlhf pretrain --preset small --out runs/base\n    python scripts/ship_base.py runs/base\n\n"
        f"Parameters: {summary['parameters']:,}. Validation perplexity {summary['eval_perplexity']:.1f}, "
        f"{summary['eval_bits_per_byte']:.3f} bits per byte, after {summary['steps']} steps "
        f"({summary['train_tokens']:,} tokens, {summary['wall_s']:.0f} s).\n\n"
        "The configuration it was trained with:\n\n```yaml\n" + config + "```\n", encoding="utf-8")
    print(f"stored {run / 'model'} in {BASE_MODEL}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/base")
