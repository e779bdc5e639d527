import torch
from torch.testing import assert_close

from rlhf.models.load import load_causal_lm
from rlhf.rollout.attention import NAME, use_fp32_attention


def test_fp32_attention_changes_nothing_in_fp32_and_little_in_bf16(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir).eval()
    ids = torch.tensor([[5, 17, 33, 2, 9, 41], [1, 1, 8, 12, 90, 7]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            before_bf16 = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
    assert use_fp32_attention(model) and model.config._attn_implementation == NAME
    with torch.no_grad():
        after = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            after_bf16 = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
    real = mask.bool()
    assert_close(after[real], before[real], rtol=0, atol=1e-5)
    # under bf16 autocast, fp32 attention stays at least as close to the fp32 result
    assert (after_bf16 - after)[real].abs().mean() <= (before_bf16 - before)[real].abs().mean() * 1.05
    assert not use_fp32_attention(model)  # already switched: left as it is
