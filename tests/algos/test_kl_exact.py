import math

import pytest
import torch

from rlhf.algos.kl_exact import exact_token_kl


def test_exact_token_kl_hand_worked():
    # pi = [1/2, 1/2], ref = [1/4, 3/4]: KL = 1/2 ln(2) + 1/2 ln(2/3) = 0.34657 - 0.20273 = 0.14384
    logits = torch.log(torch.tensor([[[0.5, 0.5]]]))
    ref_logits = torch.log(torch.tensor([[[0.25, 0.75]]])) + 3.0  # a shift of the logits changes nothing
    kl = exact_token_kl(logits, ref_logits)
    assert kl.shape == (1, 1) and kl.dtype == torch.float32
    assert kl.item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), abs=1e-6)


def test_exact_token_kl_matches_torch_distributions_and_is_never_negative():
    gen = torch.Generator().manual_seed(0)
    logits, ref_logits = torch.randn(5, 3, 11, generator=gen), torch.randn(5, 3, 11, generator=gen)
    expected = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=logits),
                                                 torch.distributions.Categorical(logits=ref_logits))
    got = exact_token_kl(logits.bfloat16().float(), ref_logits, chunk_size=2)  # chunking does not change a row
    torch.testing.assert_close(exact_token_kl(logits, ref_logits, chunk_size=2), expected)
    assert (got >= 0).all()
    assert torch.equal(exact_token_kl(logits, logits), torch.zeros(5, 3))
