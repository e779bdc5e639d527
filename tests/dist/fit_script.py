"""Run by test_fit_data_parallel, alone or under torchrun: `fit` on a 3->1 linear model, 16 fixed
examples, global micro-batch 4, 2 accumulated, 4 steps, a checkpoint at step 2.
argv: OUT [resume]. Rank 0 saves the final weights as OUT/weights.pt."""

import sys

import torch

from rlhf.config import TrainConfig
from rlhf.runtime import dist, init
from rlhf.train.loop import BatchPlan, fit

out, resume = sys.argv[1], len(sys.argv) > 2
cfg = TrainConfig(out=out, max_steps=4, batch_size=4, grad_accum=2, lr=1e-2, save_every=2, log_every=1, progress=False,
                  precision="fp32", resume=resume)
torch.manual_seed(0)
model = torch.nn.Linear(3, 1)
if dist.rank() == 1:
    with torch.no_grad():
        model.weight.add_(1.0)  # a replica that drew other numbers: fit starts every rank from rank 0's
xs = torch.linspace(-1, 1, 48).view(16, 3)
ys = xs.sum(1, keepdim=True) ** 2
plan = BatchPlan(16, cfg.batch_size, cfg.seed)


def batch_at(i: int) -> dict:
    idx = plan.micro_batch(i)
    # a loss summed over "tokens": example j counts j % 3 + 1 times, so ranks hold unequal counts
    return {"x": xs[idx], "y": ys[idx], "w": torch.tensor([j % 3 + 1.0 for j in idx]),
            "n_units": sum(j % 3 + 1 for j in idx), "n_tokens": len(idx)}


def loss_fn(m, batch):
    return (batch["w"] * (m(batch["x"]) - batch["y"]).squeeze(1) ** 2).sum(), {"share": float(len(batch["x"]))}


fit(init(cfg), model, batch_at, plan, loss_fn)
if dist.is_main():
    torch.save(model.state_dict(), f"{out}/weights.pt")
dist.shutdown()
