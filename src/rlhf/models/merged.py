"""A policy's weights as a plain Hugging Face model holds them, LoRA adapters merged in, computed
beside the trained model without touching it: what an inference engine that knows nothing of
adapters loads (`rlhf.rollout.vllm_sampler`'s weight sync).

peft's own `merge_and_unload` writes the merged weights into the model (and drops the adapter),
so it could only run on a copy of the whole model at every sync; here each adapted linear's
merged weight W + scaling * B @ A is a new tensor (peft's `get_delta_weight`, which also handles
`fan_in_fan_out`), and every other tensor is the model's own, not copied.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def merged_weights(model) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of every weight of `model` under the names of the plain model (as
    `model.state_dict()` names them without peft, e.g. `model.layers.0.self_attn.q_proj.weight`).
    A peft LoRA model's adapted linears carry their active adapters merged in; any other model's
    tensors are its state dict's, detached. Nothing of `model` changes."""
    if not hasattr(model, "peft_config"):
        return [(name, tensor.detach()) for name, tensor in model.state_dict().items()]
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    deltas: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if not isinstance(module, LoraLayer) or module.merged:  # a merged layer's base weight already has it
            continue
        for adapter in module.active_adapters:
            if adapter not in module.lora_A:
                continue
            if module.use_dora.get(adapter):
                raise ValueError(f"{name}: a DoRA adapter's merged weight also rescales its columns; only plain "
                                 "LoRA adapters are merged here")
            delta = module.get_delta_weight(adapter).float()
            deltas[name] = deltas[name] + delta if name in deltas else delta
    weights = []
    for key, tensor in base.state_dict().items():
        if ".lora_" in key:  # lora_A, lora_B, lora_embedding_A/B, lora_magnitude_vector: merged below
            continue
        owner, _, leaf = key.replace(".base_layer.", ".").rpartition(".")
        if leaf == "weight" and owner in deltas:
            tensor = (tensor.float() + deltas[owner]).to(tensor.dtype)
        weights.append((f"{owner}.{leaf}", tensor.detach()))
    return weights
