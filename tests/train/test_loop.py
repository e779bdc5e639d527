"""Pieces of the shared training machinery."""

import math

import torch

from rlhf.config import SFTConfig
from rlhf.train.loop import BatchPlan, make_scheduler


def test_batch_plan_is_a_pure_function_of_seed_and_index():
    a, b = BatchPlan(50, 4, seed=1), BatchPlan(50, 4, seed=1)
    assert [a.micro_batch(i) for i in range(30)] == [b.micro_batch(i) for i in reversed(range(30))][::-1]
    epoch = sum((a.micro_batch(i) for i in range(a.per_epoch)), [])
    assert len(set(epoch)) == len(epoch) == 48  # no repeats within an epoch; remainder dropped
    assert a.micro_batch(0) != a.micro_batch(a.per_epoch)  # a fresh order each epoch
    assert BatchPlan(50, 4, seed=2).micro_batch(0) != a.micro_batch(0)


def test_length_grouping_cuts_padding_but_keeps_every_example():
    lengths = [int(x) for x in torch.randint(5, 200, (512,), generator=torch.Generator().manual_seed(0))]
    plain, grouped = BatchPlan(512, 8, 0), BatchPlan(512, 8, 0, lengths=lengths)

    def padding(plan):
        return sum(8 * max(lengths[j] for j in b) - sum(lengths[j] for j in b) for b in map(plan.micro_batch, range(64)))

    assert sorted(sum(map(grouped.micro_batch, range(64)), [])) == list(range(512))
    assert padding(grouped) < 0.2 * padding(plain)


def test_schedule_warms_up_then_decays_to_the_floor():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = make_scheduler(opt, warmup_steps=4, total_steps=20, min_lr_ratio=0.1)
    lrs = []
    for _ in range(20):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:4] == sorted(lrs[:4]) and math.isclose(lrs[4], 1.0)
    assert lrs[4:] == sorted(lrs[4:], reverse=True) and lrs[-1] > 0.1
    assert math.isclose(sched.get_last_lr()[0], 0.1)


def test_total_steps_follow_epochs_and_accumulation():
    plan = BatchPlan(100, 5, 0)
    assert plan.total_steps(SFTConfig(epochs=2, grad_accum=2)) == 20
    assert plan.total_steps(SFTConfig(max_steps=7)) == 7
