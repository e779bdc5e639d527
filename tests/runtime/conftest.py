"""A seconds-long supervised run (a linear model under `loop.fit`) for checkpoint and run-directory tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def linear_fit():
    """linear_fit(out, **fields) -> (model, run_dir): `fit` on a 3->1 linear model, squared output as
    the loss, 16 fixed examples; 4 steps, a checkpoint every 2 (step 2: the last step is not saved)."""
    from rlhf.config import TrainConfig
    from rlhf.runtime import init
    from rlhf.train.loop import BatchPlan, fit

    def run(out, model: torch.nn.Module | None = None, **fields):
        values = dict(out=str(out), max_steps=4, batch_size=2, lr=1e-2, save_every=2, log_every=1, progress=False,
                      precision="fp32", device="cpu")
        cfg = TrainConfig(**{**values, **fields})
        if model is None:
            model = torch.nn.Linear(3, 1)
            with torch.no_grad():
                model.weight.copy_(torch.tensor([[0.5, -0.25, 1.0]]))
                model.bias.fill_(0.1)
        xs = torch.linspace(-1, 1, 48).view(16, 3)
        plan = BatchPlan(16, cfg.batch_size, cfg.seed)

        def batch_at(i: int) -> dict:
            idx = plan.micro_batch(i)
            return {"x": xs[idx], "n_units": len(idx), "n_tokens": len(idx)}

        def loss_fn(m, batch):
            return (m(batch["x"]) ** 2).sum(), {}

        rt = init(cfg)
        fit(rt, model, batch_at, plan, loss_fn)
        return model, rt.run_dir

    return run
