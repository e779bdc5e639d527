"""Do a model directory, its tokenizer and the policy's tokenizer fit together? Checked from the
files alone (config.json, tokenizer files), before any weights are loaded.

- `check_model_dir`: the directory is a local Hugging Face model with safetensors weights, its
  tokenizer loads, and the tokenizer is no larger than the model's embedding matrix (a token id
  past the last row would index out of range, or read garbage on some kernels);
- `check_shared_tokenizer`: a model that reads the policy's token ids (the reference, whose
  log-probs are compared token by token with the policy's; PPO's critic, which values each of the
  policy's tokens) has the policy's vocabulary. A reward model that is an encoder with its own
  tokenizer (e.g. all-MiniLM-L6-v2) is not checked this way: it reads the response as text.

    from rlhf.models import compat
    tokenizer = compat.check_model_dir("runs/sft/model", "--model")
    compat.check_shared_tokenizer(tokenizer, "runs/other/model", "--reference")   # ValueError if not
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .load import ModelNotFound, load_tokenizer, resolve_model_dir


def embedding_rows(model_dir: str | os.PathLike) -> int | None:
    """Rows of the input embedding matrix, read from config.json (`vocab_size`, or that of its
    `text_config` for multimodal models); None when the config does not say."""
    config = json.loads((resolve_model_dir(model_dir) / "config.json").read_text(encoding="utf-8"))
    rows = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    return int(rows) if rows else None


def check_tokenizer_fits(tokenizer, model_dir: str | os.PathLike, role: str) -> None:
    """ValueError if `tokenizer` has more tokens than `model_dir`'s embedding matrix has rows."""
    rows = embedding_rows(model_dir)
    if rows is not None and len(tokenizer) > rows:
        raise ValueError(
            f"{role} {model_dir}: its tokenizer has {len(tokenizer)} tokens but the model's embedding matrix has "
            f"{rows} rows (vocab_size in config.json), so ids {rows} and above would index past it. Resize the "
            "embeddings to the tokenizer (model.resize_token_embeddings(len(tokenizer))) and save the model again, "
            "or use the tokenizer the model was trained with")


def check_model_dir(model_dir: str | os.PathLike, role: str, trust_remote_code: bool = False):
    """The tokenizer of `model_dir`, after checking that the directory is a model with safetensors
    weights, that its tokenizer loads and that it fits the embedding matrix. Errors name `role`
    (the option that named the directory, e.g. "--reference")."""
    try:
        path = resolve_model_dir(model_dir)
    except ModelNotFound as err:
        raise ModelNotFound(f"{role}: {err}") from None
    from .ensemble import is_ensemble_dir, member_dirs

    if is_ensemble_dir(path):  # a reward-model ensemble: each member is a model directory of its own
        for member in member_dirs(path):
            check_model_dir(member, f"{role} (ensemble member {member.name})", trust_remote_code)
    elif not any(path.glob("*.safetensors")):
        raise ModelNotFound(f"{role}: {path} holds no .safetensors weights (pickled .bin weights are refused for safety)")
    try:
        tokenizer = load_tokenizer(path, trust_remote_code)
    except Exception as err:  # whatever transformers raises, the directory is unusable: say which and why
        raise ValueError(f"{role} {path}: its tokenizer does not load ({type(err).__name__}: {err})") from err
    check_tokenizer_fits(tokenizer, path, role)
    return tokenizer


def vocabulary_difference(vocab_a: dict[str, int], vocab_b: dict[str, int]) -> str:
    """A short description of how two token -> id maps differ (for error messages)."""
    if len(vocab_a) != len(vocab_b):
        return f"{len(vocab_a)} tokens against {len(vocab_b)}"
    token = next(t for t in sorted(vocab_a) if vocab_b.get(t) != vocab_a[t])
    return f"token {token!r} is id {vocab_a[token]} in one and {vocab_b.get(token)} in the other"


def check_shared_tokenizer(policy, model_dir: str | os.PathLike | None, role: str,
                           trust_remote_code: bool = False, why: str = "") -> None:
    """ValueError unless `model_dir` (None: nothing to check) has the policy's vocabulary.

    `policy` is the policy's tokenizer or its model directory; `role` names the option that gave
    `model_dir` (e.g. "--reference") and `why` says why it must match (default: it reads the
    policy's token ids), for the message.
    """
    if model_dir is None:
        return
    if isinstance(policy, (str, os.PathLike)):
        policy = load_tokenizer(policy, trust_remote_code)
    vocab, other = policy.get_vocab(), load_tokenizer(model_dir, trust_remote_code).get_vocab()
    if vocab != other:
        raise ValueError(
            f"{role} {Path(model_dir)}: its tokenizer differs from the policy's ({vocabulary_difference(vocab, other)}). "
            + (why or f"The {role.lstrip('-')} reads the policy's token ids, so it must share its tokenizer "
                      "(e.g. a model fine-tuned from the same base)"))


def is_causal(model_dir: str | os.PathLike, trust_remote_code: bool = False) -> bool:
    """Whether `model_dir` is a causal LM (or a reward model built on one) rather than an encoder,
    as `rlhf.models.reward` decides from its config."""
    from transformers import AutoConfig

    from .reward import infer_input_format

    config = AutoConfig.from_pretrained(resolve_model_dir(model_dir), local_files_only=True,
                                        trust_remote_code=trust_remote_code)
    return infer_input_format(config) == "causal"
