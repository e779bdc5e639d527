import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from rlhf.algos.logprobs import entropy_from_logits, sequence_logprobs, token_logprobs
from rlhf.algos.sft import masked_cross_entropy, shift_for_next_token


def reference_logprobs(logits, labels):
    return torch.log_softmax(logits.float(), -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def random_batch(dtype=torch.float32, B=3, T=5, V=11, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, T, V, generator=gen) * 3).to(dtype)
    labels = torch.randint(0, V, (B, T), generator=gen)
    return logits, labels


def test_token_logprobs_hand():
    # two equal logits: log 1/2; logits (0, log 3): p = 3/4 for class 1
    logits = torch.tensor([[[0.0, 0.0], [0.0, math.log(3)]]])
    expected = torch.tensor([[math.log(0.5), math.log(0.75)]])
    assert_close(token_logprobs(logits, torch.tensor([[0, 1]])), expected)


@pytest.mark.parametrize("chunk_size", [1, 2, 8])
def test_token_logprobs_matches_log_softmax_fp32(chunk_size):
    logits, labels = random_batch()
    assert_close(token_logprobs(logits, labels, chunk_size), reference_logprobs(logits, labels))


def test_token_logprobs_bf16_is_upcast():
    logits, labels = random_batch(torch.bfloat16)
    out = token_logprobs(logits, labels)
    assert out.dtype == torch.float32
    assert_close(out, reference_logprobs(logits, labels), atol=1e-5, rtol=1e-5)


def test_token_logprobs_gradient_matches_autograd():
    logits, labels = random_batch()
    weights = torch.randn(labels.shape, generator=torch.Generator().manual_seed(1))
    fast = logits.clone().requires_grad_()
    (token_logprobs(fast, labels, chunk_size=2) * weights).sum().backward()
    slow = logits.clone().requires_grad_()
    (reference_logprobs(slow, labels) * weights).sum().backward()
    assert_close(fast.grad, slow.grad)


def test_token_logprobs_gradcheck_fp64():
    logits, labels = random_batch(torch.float64, B=2, T=2, V=4)
    logits.requires_grad_()
    assert torch.autograd.gradcheck(lambda z: token_logprobs(z, labels), (logits,))


def test_token_logprobs_bf16_gradient_dtype():
    logits, labels = random_batch(torch.bfloat16)
    logits.requires_grad_()
    token_logprobs(logits, labels).sum().backward()
    assert logits.grad.dtype == torch.bfloat16
    expected = torch.autograd.grad(reference_logprobs(logits, labels).sum(), logits)[0]
    assert_close(logits.grad.float(), expected.float(), atol=1e-2, rtol=1e-2)


def test_token_logprobs_shape_mismatch():
    logits, labels = random_batch()
    with pytest.raises(ValueError):
        token_logprobs(logits, labels[:, :-1])


def test_sequence_logprobs_sum_and_average():
    logps = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert_close(sequence_logprobs(logps, mask), torch.tensor([-3.0, -15.0]))
    assert_close(sequence_logprobs(logps, mask, average=True), torch.tensor([-1.5, -5.0]))


def test_entropy_hand_and_reference():
    # uniform over 4 classes: log 4; a near one-hot distribution: ~0
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]])
    assert_close(entropy_from_logits(logits), torch.tensor([[math.log(4), 0.0]]))
    logits, _ = random_batch(torch.bfloat16)
    p = torch.softmax(logits.float(), -1)
    assert_close(entropy_from_logits(logits, chunk_size=2), -(p * p.log()).sum(-1))


def test_masked_cross_entropy_matches_torch():
    logits, labels = random_batch()
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    labels = labels.masked_fill(mask == 0, -100)  # ignore indices must be tolerated
    loss, n_tokens = masked_cross_entropy(logits, labels, mask)
    expected = F.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1), ignore_index=-100)
    assert_close(loss, expected)
    assert n_tokens.item() == 8


def test_masked_cross_entropy_hand_and_empty():
    # all-zero logits over V = 4: every token costs log 4
    logits = torch.zeros(2, 3, 4)
    labels = torch.tensor([[0, 1, 2], [3, 0, 1]])
    loss, n = masked_cross_entropy(logits, labels, torch.tensor([[1, 1, 0], [0, 0, 1]]))
    assert_close(loss, torch.tensor(math.log(4)))
    assert n.item() == 3
    loss, n = masked_cross_entropy(logits, labels, torch.zeros(2, 3))
    assert loss.item() == 0.0 and n.item() == 0


def test_shift_for_next_token():
    logits = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    ids = torch.tensor([[5, 6, 7, 8], [1, 2, 3, 4]])
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]])
    shifted_logits, labels, loss_mask = shift_for_next_token(logits, ids, mask)
    assert torch.equal(shifted_logits, logits[:, :3])
    assert torch.equal(labels, torch.tensor([[6, 7, 8], [2, 3, 4]]))
    assert torch.equal(loss_mask, torch.tensor([[0, 1, 1], [1, 1, 0]]))


def test_token_logprobs_saves_no_fp32_copy_for_backward():
    # autograd should keep only the bf16 logits (B*T*V*2 bytes) and small (B, T) tensors,
    # where log_softmax(logits.float()) would keep a fp32 (B, T, V) copy as well
    logits, labels = random_batch(torch.bfloat16, B=2, T=4, V=1000)
    logits.requires_grad_()
    saved_bytes = []

    def pack(tensor):
        saved_bytes.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        token_logprobs(logits, labels)
    assert sum(saved_bytes) < logits.numel() * 2 + 1000
