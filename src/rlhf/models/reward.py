"""Reward models: a scalar score r(prompt, response), and the one call that scores text with them.

A reward model is an ordinary `transformers` `AutoModelForSequenceClassification` with
`num_labels=1`, so a saved one loads with transformers alone:

- from a causal LM (e.g. the SFT policy, as InstructGPT does): `LlamaForSequenceClassification`
  and its kin, a linear value head `score` on the hidden state of the last non-padding token;
- from an encoder (e.g. all-MiniLM-L6-v2): `BertForSequenceClassification` and its kin, a head on
  the pooled [CLS] state, reading `[CLS] prompt [SEP] response [SEP]`.

What rlhf adds is kept in `config.json`, beside the standard fields:
`rlhf_input_format` ("causal" or "pair", see `rlhf.data.tokenize`), `rlhf_max_length` (the
training length), `rlhf_context_turns` (how much of the prompt the model reads: -1 all, N the
last N turns, 0 the response alone), and `reward_mean` / `reward_std`: the mean and standard deviation of the
model's rewards on its training data, so later stages can normalise, (r - mean) / std.

    from rlhf.models import load_reward_model
    rm = load_reward_model("runs/rm/model")
    rm.score(["How do I bake bread?"], [" Mix flour, water, salt and yeast..."])  # tensor([0.83])
    rm.score(prompts, responses, normalize=True)                                  # (r - mean) / std

A PPO critic starts from a causal reward model: its body (`model.model` for Llama) gives hidden
states (B, T, H) and `model.score` maps each position to a value (B, T, 1); the reward is that
head read at the last non-padding token.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Sequence

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from ..data.collate import collate_rewards
from ..data.records import PromptText
from ..data.tokenize import REWARD_INPUT_FORMATS, RewardExample, tokenize_for_reward
from ..logs import quieted
from ..runtime import dist
from ..runtime.device import autocast as runtime_autocast
from ..runtime.sharding import holds_shards, reshard
from .ensemble import EnsembleRewardModel, is_ensemble_dir, member_dirs
from .load import ModelNotFound, load_tokenizer, no_file_bars, resolve_model_dir

INPUT_FORMAT, MAX_LENGTH, REWARD_MEAN, REWARD_STD = "rlhf_input_format", "rlhf_max_length", "reward_mean", "reward_std"
CONTEXT_TURNS = "rlhf_context_turns"
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def infer_input_format(config) -> str:
    """"causal" for decoders (a causal LM, or a reward model saved from one), "pair" for encoders.

    A reward model saved by rlhf says which in `rlhf_input_format`; otherwise the architecture
    decides: a `*ForCausalLM` / `*LMHeadModel` directory is a decoder, anything else (BertModel,
    *ForMaskedLM, *ForSequenceClassification of an encoder) an encoder unless the model type is a
    known decoder.
    """
    stored = getattr(config, INPUT_FORMAT, None)
    if stored:
        return stored
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith(_CAUSAL_SUFFIXES) for a in architectures):
        return "causal"
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    is_decoder = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    return "causal" if is_decoder else "pair"


def _quiet_transformers():
    """Loading a causal LM as a sequence classifier warns that the new head is untrained: that is the point."""
    return quieted("transformers", logging.ERROR)


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextlib.contextmanager
def _no_padding_mask_warning():
    """GPT-2 and some encoders warn "We strongly recommend passing in an `attention_mask`" when a
    pad id ends a row and no mask is given; `sequence_rewards` leaves the mask out on purpose (right
    padding under causal attention, or after the last sequence of a packed row), so that one
    message is dropped, only around those calls."""
    logger = logging.getLogger("transformers.modeling_utils")
    drop = _DropMessage("We strongly recommend passing in an `attention_mask`")
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def load_reward_backbone(
    model_dir: str | os.PathLike, input_format: str = "auto", trust_remote_code: bool = False
) -> tuple[PreTrainedModel, object, str]:
    """(model, tokenizer, input_format) for training a reward model from `model_dir`.

    `model_dir` is a causal LM, an encoder, or a reward model to train further; a new value head
    (transformers' initialisation, seeded by the caller) is added where the directory has none.
    The model is in fp32 with SDPA attention; `config.pad_token_id` is set so that pooling finds
    the last real token.
    """
    path = resolve_model_dir(model_dir)
    if not any(path.glob("*.safetensors")):
        raise ModelNotFound(f"{path} holds no .safetensors weights (pickled .bin weights are refused for safety)")
    tokenizer = load_tokenizer(path, trust_remote_code)
    with _quiet_transformers(), no_file_bars():
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, local_files_only=True, use_safetensors=True, dtype=torch.float32,
            attn_implementation="sdpa", trust_remote_code=trust_remote_code,
        )
    if input_format == "auto":
        input_format = infer_input_format(model.config)
    if input_format not in REWARD_INPUT_FORMATS:
        raise ValueError(f"unknown input format {input_format!r}; choose auto or one of {REWARD_INPUT_FORMATS}")
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False  # a scorer never generates; no key/value cache in its forward
    setattr(model.config, INPUT_FORMAT, input_format)
    return model, tokenizer, input_format


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off in every layer: chosen and rejected are then scored by the same function, and
    PPO's first ratio is exactly 1. Attention dropout of Llama-style models is a float that the
    attention layers read (`attention_dropout`), not an nn.Dropout module: zero it too."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0
        config = getattr(module, "config", None)
        if isinstance(getattr(config, "attention_dropout", None), float):
            config.attention_dropout = 0.0


def _inner(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports_packing(model) -> bool:
    """Packed (padding-free) batches need a decoder body and a `score` head applied per position."""
    inner = _inner(model)
    return getattr(inner.config, INPUT_FORMAT, None) == "causal" and hasattr(inner, "score") \
        and hasattr(inner, inner.base_model_prefix)


def sequence_rewards(model, batch: dict) -> torch.Tensor:
    """(N,) float32 rewards of the N sequences of a batch from `rlhf.data.collate`.

    Padded batches (`collate_rewards`: input_ids, attention_mask, token_type_ids? (N, T)) go
    through the model's own forward, so training pools exactly as the saved model does. Packed
    batches (`pack_rewards`: input_ids, position_ids (R, L); score_rows, score_cols (N,)) run the
    decoder body once and apply the head only at the N scored positions.
    """
    if "score_rows" in batch:
        inner = _inner(model)
        body = getattr(inner, inner.base_model_prefix)
        with _no_padding_mask_warning():  # padding only after a row's last sequence: no mask needed
            hidden = body(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).last_hidden_state
        return inner.score(hidden[batch["score_rows"], batch["score_cols"]]).squeeze(-1).float()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    if getattr(_inner(model).config, INPUT_FORMAT, None) == "causal":
        # Right padding under causal attention: every pad comes after the real tokens, which cannot
        # see it, so the padding mask changes no real position (and pooling reads input_ids). Without
        # it SDPA takes its is_causal kernel instead of a materialised (N, 1, T, T) mask.
        inputs.pop("attention_mask", None)
        with _no_padding_mask_warning():
            return model(**inputs).logits.squeeze(-1).float()
    return model(**inputs).logits.squeeze(-1).float()


def record_reward_stats(model, mean: float, std: float, max_length: int, context_turns: int = -1) -> None:
    """Store the training-data reward statistics and how inputs were built in the model's config."""
    config = _inner(model).config
    setattr(config, REWARD_MEAN, float(mean))
    setattr(config, REWARD_STD, float(std))
    setattr(config, MAX_LENGTH, int(max_length))
    setattr(config, CONTEXT_TURNS, int(context_turns))


class RewardModel:
    """A trained reward model and its tokenizer, scoring (prompt, response) pairs.

    `score(prompts, responses)` tokenises each pair as in training (`rlhf.data.tokenize`,
    `input_format`, `context_turns`), runs the model in batches of similar length and returns the (B,) float32
    rewards on the CPU, in input order. `normalize=True` returns (r - mean) / std with the
    training-data statistics stored with the model (0 and 1 if it has none).
    """

    def __init__(self, model, tokenizer, input_format: str, max_length: int, mean: float = 0.0, std: float = 1.0,
                 device: str | torch.device = "cpu", precision: str = "fp32", context_turns: int = -1):
        self.model, self.tokenizer, self.input_format = model.eval(), tokenizer, input_format
        self.context_turns = context_turns
        self.max_length, self.mean, self.std = max_length, mean, std
        self.device, self.precision = torch.device(device), precision

    def tokenize(self, prompt: PromptText, response: str) -> RewardExample:
        return tokenize_for_reward(self.tokenizer, prompt, response, self.max_length, self.input_format, self.context_turns)

    @torch.no_grad()
    def score_examples(self, examples: Sequence[RewardExample], batch_size: int = 32) -> torch.Tensor:
        """(N,) rewards of tokenised examples, in their order.

        A model sharded over the ranks (`--sharding fsdp2`: every forward gathers each layer, a
        collective) runs as many batches on every rank, the most any rank needs: a rank with
        fewer rows runs one-row batches whose score it drops, so that no rank waits forever.
        Its root unit (embeddings, final norm, head), which stays gathered after a forward for the
        head read after the body, goes back to its shard at the end: a frozen model has no
        backward to free it."""
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
        out = torch.empty(len(examples))
        chunks = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        sharded = holds_shards(self.model)
        if sharded:
            idle = [examples[order[0]]] if examples else [self.tokenize("", "")]
            chunks += [None] * (max(dist.gather_objects(len(chunks))) - len(chunks))
        for chunk in chunks:
            batch = collate_rewards(idle if chunk is None else [examples[i] for i in chunk], self.tokenizer.pad_token_id)
            with runtime_autocast(self.precision, self.device):  # fp32 where the CPU would emulate bf16
                rewards = sequence_rewards(self.model, {k: v.to(self.device) for k, v in batch.items()})
            if chunk is not None:
                out[chunk] = rewards.cpu()
        if sharded:
            reshard(self.model)
        return out

    def score(self, prompts: Sequence[PromptText], responses: Sequence[str], normalize: bool = False,
              batch_size: int = 32) -> torch.Tensor:
        """(B,) rewards of responses[i] to prompts[i]; see the class docstring."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        rewards = self.score_examples([self.tokenize(p, r) for p, r in zip(prompts, responses)], batch_size)
        return (rewards - self.mean) / self.std if normalize else rewards


def load_reward_model(model_dir: str | os.PathLike, device: str | torch.device = "cpu", precision: str = "fp32",
                      max_length: int | None = None) -> RewardModel | EnsembleRewardModel:
    """The reward model saved in `model_dir` (by `rlhf rm`, or any sequence classifier with one
    label), ready to `.score(prompts, responses)`. `max_length` defaults to the training length.
    An ensemble directory (`rlhf rm --ensemble K`) gives an `EnsembleRewardModel` of its members."""
    path = resolve_model_dir(model_dir)
    if is_ensemble_dir(path):
        return EnsembleRewardModel([load_reward_model(member, device, precision, max_length)
                                    for member in member_dirs(path)], path)
    tokenizer = load_tokenizer(path)
    with no_file_bars():
        model = AutoModelForSequenceClassification.from_pretrained(
            path, local_files_only=True, use_safetensors=True, dtype=torch.float32, attn_implementation="sdpa"
        )
    if model.config.num_labels != 1:
        raise ValueError(f"{path} is a classifier with {model.config.num_labels} labels, not a reward model (1 label)")
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    config = model.config
    length = max_length or getattr(config, MAX_LENGTH, None) or getattr(tokenizer, "model_max_length", 512)
    length = min(int(length), getattr(config, "max_position_embeddings", None) or int(length))
    return RewardModel(model.to(device), tokenizer, infer_input_format(config), length,
                       float(getattr(config, REWARD_MEAN, 0.0)), float(getattr(config, REWARD_STD, 1.0)), device, precision,
                       int(getattr(config, CONTEXT_TURNS, -1)))

