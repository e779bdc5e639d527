"""Load and save Hugging Face models and tokenizers from local directories; LoRA through peft.

A model is a directory in Hugging Face format (config.json, safetensors weights, tokenizer
files) or a Hub id (`org/name[@revision]`), resolved into the Hugging Face cache by
`rlhf.models.hub` (safetensors only; offline once cached).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from .hub import HubModelError, looks_like_hub_id, resolve_hub_model
from ..runtime.model_dir import COMPLETE_MARKER, TMP_INFIX, publish_model_dir, save_pretrained  # noqa: F401 (re-exported)
from ..runtime.model_dir import no_file_bars


class ModelNotFound(FileNotFoundError):
    pass


def check_complete(path: Path) -> None:
    """Refuse a model directory an rlhf run left unfinished: its temporary directory, or the
    `model/` of a run directory (beside config.yaml) without the completion marker. Any other
    directory (a downloaded model, one a user built) carries no marker and is not judged."""
    if path.name.startswith(".") and TMP_INFIX in path.name:
        raise ModelNotFound(f"{path} is the temporary directory of a model save that was interrupted; "
                            "use the run's model/ once the run has finished")
    in_run_dir = path.name == "model" and (path.parent / "config.yaml").exists()
    if in_run_dir and not (path / COMPLETE_MARKER).exists():
        raise ModelNotFound(
            f"{path} is the model of the run in {path.parent}, but it has no {COMPLETE_MARKER}: the run stopped "
            f"before it finished writing it. Continue that run with --resume (or, if you know the model is "
            f"complete, create {path / COMPLETE_MARKER})"
        )


def resolve_model_dir(name_or_dir: str | os.PathLike, trust_remote_code: bool = False) -> Path:
    """The local directory for `name_or_dir`: a directory as it is, a Hub id (`org/name[@revision]`)
    through the Hugging Face cache (rlhf.models.hub), else a clear error."""
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFound(f"{path} is a directory but holds no config.json: not a Hugging Face model directory")
        check_complete(path)
        return path
    text = str(name_or_dir)
    if looks_like_hub_id(text):
        try:
            return resolve_hub_model(text, trust_remote_code)
        except HubModelError as err:
            raise ModelNotFound(str(err)) from None
    raise ModelNotFound(f"model directory {text!r} does not exist")


def load_tokenizer(model_dir: str | os.PathLike, trust_remote_code: bool = False):
    path = resolve_model_dir(model_dir, trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        # Padding positions are masked out of attention and loss, so any id is safe; EOS is the common choice.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    model_dir: str | os.PathLike,
    trust_remote_code: bool = False,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str | None = "sdpa",
) -> PreTrainedModel:
    """A causal LM from a local directory or Hub id; safetensors weights only (no pickle)."""
    path = resolve_model_dir(model_dir, trust_remote_code)
    if not any(path.glob("*.safetensors")):
        raise ModelNotFound(f"{path} holds no .safetensors weights (pickled .bin weights are refused for safety)")
    with no_file_bars():
        return AutoModelForCausalLM.from_pretrained(
            path,
            local_files_only=True,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            dtype=dtype,
            attn_implementation=attn_implementation,
        )


def add_lora(model: PreTrainedModel, r: int, alpha: float, dropout: float, target_modules: str | list[str] = "all-linear"):
    """Wrap `model` with a LoRA adapter of rank `r`; only the adapter trains."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def load_policy(cfg, device: torch.device, tokenizer=None):
    """The trainable causal LM of a stage and its tokenizer: loaded from `cfg.model`, wrapped in
    LoRA when `cfg.lora_r > 0`, moved to `device`. `cfg` is any TrainConfig. `tokenizer`: the one
    already loaded from `cfg.model` (a stage that tokenised its data before loading the model)."""
    tokenizer = tokenizer or load_tokenizer(cfg.model, cfg.trust_remote_code)
    model = load_causal_lm(cfg.model, cfg.trust_remote_code)
    if cfg.lora_r > 0:
        model = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    return model.to(device), tokenizer
