"""rlhf.models.merged: a LoRA policy's merged weights are peft's own merge (on a copy) under the
plain model's names, a plain model loaded with them computes the LoRA policy's logits, and the
trained model is left as it was (adapter still separate, base weights untouched)."""

import copy

import pytest
import torch

from rlhf.models.load import add_lora, load_causal_lm
from rlhf.models.merged import merged_weights
from rlhf.resources import BASE_MODEL


@pytest.fixture(scope="module")
def lora_policy():
    model = add_lora(load_causal_lm(str(BASE_MODEL)), r=4, alpha=8, dropout=0.0)
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():  # peft starts B at zero (no change); a trained adapter has moved it
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=noise))
    return model.eval()


def test_merged_weights_are_peft_merge_without_changing_the_model(lora_policy):
    before = {k: v.clone() for k, v in lora_policy.state_dict().items()}
    merged = dict(merged_weights(lora_policy))
    peft_merge = copy.deepcopy(lora_policy).merge_and_unload().state_dict()
    plain = load_causal_lm(str(BASE_MODEL)).state_dict()
    assert merged.keys() == peft_merge.keys() == plain.keys()
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, peft_merge[name], rtol=0, atol=1e-6)
    q_proj = "model.layers.0.self_attn.q_proj.weight"  # adapted: it moved; the norms were not
    assert (merged[q_proj] - plain[q_proj]).abs().max() > 1e-3
    assert torch.equal(merged["model.norm.weight"], plain["model.norm.weight"])
    after = lora_policy.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_a_plain_model_with_the_merged_weights_computes_the_lora_policys_logits(lora_policy):
    plain = load_causal_lm(str(BASE_MODEL)).eval()
    plain.load_state_dict(dict(merged_weights(lora_policy)))
    ids = torch.arange(3, 40).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, lora_policy(ids).logits, rtol=0, atol=1e-4)


def test_a_plain_model_gives_its_own_state_dict():
    model = load_causal_lm(str(BASE_MODEL))
    assert [name for name, _ in merged_weights(model)] == list(model.state_dict())
