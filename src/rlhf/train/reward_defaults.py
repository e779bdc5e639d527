"""`rlhf rm`'s defaults per backbone kind, and what each was chosen on.

An encoder (all-MiniLM-L6-v2 and other `*ForSequenceClassification`-able encoders, read as
[CLS] prompt [SEP] response) and a causal LM (a value head on the last token, InstructGPT's
way) learn best with different settings. The fields below are None in `RewardConfig` until
`resolve` fills them from the backbone's kind; a value the user gives (flag, YAML, Python)
is never replaced. The saved config.yaml holds the resolved values, so a rerun or a resume
reads the same ones.

What the values were chosen on (docs/benchmarks.md, "Reward models on HH-RLHF harmless"):
- encoder: 5-fold cross-validation on HH-RLHF harmless-train (1,800 pairs), all-MiniLM-L6-v2:
  the response alone (context_turns 0; the demo's MiniLM reward model too: 0.791 against 0.775
  with the prompt), a linear-probe head (LP-FT, 0.634 against 0.631 for a random head), lr
  3e-5, 1 epoch (more epochs overfit: 0.653 after 1, 0.617 after 3); no tail averaging
  (`--average-tail`): it stays an option until cross-validation says it helps.
- causal LM: the earlier defaults (lr 1e-4, 1 epoch, a random head, the whole prompt as
  InstructGPT reads it; `rlhf demo --reward-backbone sft` trains its reward model with that lr). On HH-RLHF a 5.5M
  Llama scored 0.620 with the answer alone and a probe head against 0.610 with the whole prompt
  and a random head: within noise and two changes at once, so nothing moved.
- a reward model trained further (`rlhf iterate`) keeps its head and reads what it was trained
  to read (its stored `rlhf_context_turns`).
"""

from __future__ import annotations

import dataclasses

from ..config import RewardConfig
from ..models.compat import is_causal
from ..models.load import resolve_model_dir
from ..models.reward import CONTEXT_TURNS, INPUT_FORMAT

# field -> value, for the fields RewardConfig leaves to the backbone's kind
ENCODER = {"lr": 3e-5, "head_init": "probe", "context_turns": 0, "average_tail": 0.0}
CAUSAL = {"lr": 1e-4, "head_init": "random", "context_turns": -1, "average_tail": 0.0}
# what RewardConfig holds where nobody chose
UNSET = {"lr": None, "head_init": "auto", "context_turns": None, "average_tail": None}


def backbone_kind(cfg: RewardConfig) -> str:
    """"causal" or "encoder": from --input-format when given, else from the model's config."""
    if cfg.input_format != "auto":
        return "causal" if cfg.input_format == "causal" else "encoder"
    return "causal" if is_causal(cfg.model, cfg.trust_remote_code) else "encoder"


def stored_context_turns(model: str, trust_remote_code: bool = False) -> int | None:
    """For a reward model saved by rlhf (trained further, e.g. by `rlhf iterate`): the context it
    was trained to read (-1, all of the prompt, for one saved before that was stored); else None."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(resolve_model_dir(model, trust_remote_code), local_files_only=True,
                                        trust_remote_code=trust_remote_code)
    if getattr(config, INPUT_FORMAT, None) is None:
        return None
    return int(getattr(config, CONTEXT_TURNS, -1))


def resolve(cfg: RewardConfig) -> RewardConfig:
    """`cfg` with every per-kind field still unset filled from its backbone's kind. A reward model
    trained further keeps its trained head: no probe replaces it unless asked for."""
    unset = [name for name, value in UNSET.items() if getattr(cfg, name) == value]
    if not unset:
        return cfg
    values = dict(CAUSAL if backbone_kind(cfg) == "causal" else ENCODER)
    stored = stored_context_turns(cfg.model, cfg.trust_remote_code)
    if stored is not None:
        values["head_init"] = "random"  # "random" draws a head only where the model has none
        values["context_turns"] = stored
    return dataclasses.replace(cfg, **{name: values[name] for name in unset})
