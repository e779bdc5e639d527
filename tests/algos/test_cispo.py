"""CISPO (MiniMax-M1, arXiv 2506.13585) worked by hand: the importance weight is clipped and
detached, and every unmasked token keeps the gradient -clip(r) * A / N through log pi, including the
tokens whose ratio is outside the clip range, which PPO's clipped surrogate leaves with none."""

import torch
from torch.testing import assert_close

from rlhf.algos import POLICY_LOSSES, cispo_policy_loss, clipped_surrogate, token_log_ratio, token_mean

# B = 2, T = 3, the last token of row 1 is padding: N = 5 real tokens. clip_low 0.2, clip_high 0.28:
# weights clipped to [0.8, 1.28]. A = [1, -2] per sequence.
#   token  log pi  ratio r  A    w = clip(r)         loss -w*A*log pi        d/dlog pi = -w*A/5   PPO's gradient
#   (0,0)  -1      1.0      1    1.0                  -1*1*(-1)    =  1.0     -0.2                 -0.2
#   (0,1)  -2      2.0      1    1.28 (clipped high)  -1.28*(-2)   =  2.56    -0.256               0 (clipped)
#   (0,2)  -0.5    0.5      1    0.8  (clipped low)   -0.8*(-0.5)  =  0.4     -0.16                -0.1 (-r*A/5)
#   (1,0)  -1      0.6      -2   0.8  (clipped low)   -0.8*2*(-1)  = -1.6     0.32                 0 (clipped)
#   (1,1)  -0.25   1.5      -2   1.28 (clipped high)  -1.28*2*(-0.25) = -0.64 0.512                0.6 (-r*A/5)
#   (1,2)  -3      3.0      (padding)                                          0                    0
# loss = (1.0 + 2.56 + 0.4 - 1.6 - 0.64) / 5 = 1.72 / 5 = 0.344; 4 of 5 weights clipped.
LOGP = [[-1.0, -2.0, -0.5], [-1.0, -0.25, -3.0]]
RATIO = [[1.0, 2.0, 0.5], [0.6, 1.5, 3.0]]
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
ADV = torch.tensor([1.0, -2.0])


def _inputs():
    logp = torch.tensor(LOGP, requires_grad=True)
    old_logp = torch.tensor(LOGP) - torch.log(torch.tensor(RATIO))
    return logp, old_logp, token_log_ratio(logp, old_logp, MASK)


def test_cispo_loss_and_gradient_by_hand():
    logp, _, log_ratio = _inputs()
    per_token, stats = cispo_policy_loss(log_ratio, logp, ADV, MASK, clip_low=0.2, clip_high=0.28)
    loss = token_mean(per_token, MASK, 3)
    assert_close(loss, torch.tensor(0.344))
    assert_close(stats["clipfrac"], torch.tensor(4 / 5))
    loss.backward()
    # -clip(r) * A / N on every real token, the clipped ones included; 0 on padding
    assert_close(logp.grad, torch.tensor([[-0.2, -0.256, -0.16], [0.32, 0.512, 0.0]]))


def test_ppo_gives_the_clipped_tokens_no_gradient_where_cispo_does():
    logp, _, log_ratio = _inputs()
    per_token, _ = clipped_surrogate(log_ratio, ADV, MASK, clip_low=0.2, clip_high=0.28, dual_clip=None)
    token_mean(per_token, MASK, 3).backward()
    assert_close(logp.grad, torch.tensor([[-0.2, 0.0, -0.1], [0.0, 0.6, 0.0]]))


def test_cispo_weight_has_no_gradient_and_no_lower_bound_by_default():
    # clip_low 1 (the registry's default): the lower bound is 0, so a ratio of 0.5 keeps its weight 0.5;
    # the gradient is -w * A through log pi alone, the same as if the weight were a constant
    logp, _, log_ratio = _inputs()
    per_token, stats = POLICY_LOSSES["cispo"](log_ratio, logp, ADV, MASK, 1.0, 0.28, None)
    token_mean(per_token, MASK, 3).backward()
    # weights [1, 1.28, 0.5 | 0.6, 1.28]: only the two above 1.28 are clipped
    assert_close(logp.grad, torch.tensor([[-0.2, -0.256, -0.1], [0.24, 0.512, 0.0]]))
    assert_close(stats["clipfrac"], torch.tensor(2 / 5))
