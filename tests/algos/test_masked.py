import torch
from torch.testing import assert_close

from rlhf.algos.masked import masked_mean, masked_sum, masked_var, whiten

X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])


def test_masked_sum_and_mean_hand():
    # real entries 1, 2, 4: sum 7, mean 7/3; per row [1.5, 4.0]
    assert_close(masked_sum(X, MASK), torch.tensor(7.0))
    assert_close(masked_mean(X, MASK), torch.tensor(7.0 / 3))
    assert_close(masked_mean(X, MASK, dim=1), torch.tensor([1.5, 4.0]))
    assert_close(masked_sum(X, MASK, dim=0), torch.tensor([5.0, 2.0, 0.0]))


def test_masked_mean_empty_mask_is_zero():
    assert_close(masked_mean(X, torch.zeros_like(MASK)), torch.tensor(0.0))
    # a row with no real token gives 0, not NaN
    rows = masked_mean(X, torch.tensor([[1, 1, 0], [0, 0, 0]]), dim=1)
    assert_close(rows, torch.tensor([1.5, 0.0]))


def test_padding_nan_does_not_leak():
    x = X.clone()
    x[0, 2] = float("nan")
    assert_close(masked_mean(x, MASK), torch.tensor(7.0 / 3))


def test_masked_var_hand():
    # 1, 2, 4: mean 7/3, squared deviations 16/9 + 1/9 + 25/9 = 14/3
    # unbiased: 14/3 / 2 = 7/3; biased: 14/3 / 3 = 14/9
    assert_close(masked_var(X, MASK), torch.tensor(7.0 / 3))
    assert_close(masked_var(X, MASK, unbiased=False), torch.tensor(14.0 / 9))
    assert_close(masked_var(X, MASK), torch.tensor([1.0, 2.0, 4.0]).var())


def test_masked_var_degenerate_is_finite():
    assert masked_var(X, torch.zeros_like(MASK)).item() == 0.0
    assert masked_var(X, torch.tensor([[1, 0, 0], [0, 0, 0]])).item() == 0.0


def test_whiten_hand():
    # 2, 4, 6: mean 4, unbiased var (4 + 0 + 4) / 2 = 4, std 2 -> -1, 0, 1
    x = torch.tensor([[2.0, 4.0, 6.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert_close(whiten(x, mask)[:, :3], torch.tensor([[-1.0, 0.0, 1.0]]))
    # shift_mean=False only rescales: the mean 4 is added back
    assert_close(whiten(x, mask, shift_mean=False)[:, :3], torch.tensor([[3.0, 4.0, 5.0]]))


def test_whiten_random_zero_mean_unit_var():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 9, generator=gen) * 3 + 2
    mask = (torch.arange(9) < torch.tensor([[9], [5], [2], [7]])).long()
    w = whiten(x, mask)
    assert abs(masked_mean(w, mask).item()) < 1e-5
    assert abs(masked_var(w, mask).item() - 1) < 1e-4


def test_whiten_empty_mask_is_finite():
    assert torch.isfinite(whiten(X, torch.zeros_like(MASK))).all()
