"""Run by test_runtime_dist under torchrun with 2 processes: the seam's collectives on gloo.
Each rank asserts; a failure exits non-zero and fails the launch."""

import torch

from rlhf.runtime import dist
from rlhf.train.loop import BatchPlan

assert dist.launched() and dist.world_size() == 2
rank = dist.rank()
assert dist.is_main() == (rank == 0)
assert dist.device("auto").type == "cpu"
assert dist.rank_seed(7) == 7 + rank

assert dist.sum_all([1.0, float(rank)]) == [2.0, 1.0]
# a rank whose batch had no pair reports no margin: averaged over the ranks that have it
assert dist.mean_all({"accuracy": 0.5 + rank * 0.25, **({"margin": 2.0} if rank == 0 else {})}) == {
    "accuracy": 0.625, "margin": 2.0}

# aggregate: 3 tokens on rank 0 and 5 on rank 1, the loss sums divided by all 8
loss_sum = torch.tensor(6.0 if rank == 0 else 10.0)
assert float(dist.aggregate(loss_sum, 3 if rank == 0 else 5)) == (6.0 if rank == 0 else 10.0) / 8

# gradients summed, rank 0's weights everywhere
layer = torch.nn.Linear(2, 1)
with torch.no_grad():
    layer.weight.fill_(float(rank))
dist.broadcast_parameters(layer)
assert torch.equal(layer.weight, torch.zeros(1, 2))
layer.weight.grad = torch.full((1, 2), float(rank + 1))
layer.bias.grad = None  # unused parameters stay without a gradient
dist.sum_gradients(list(layer.parameters()))
assert torch.equal(layer.weight.grad, torch.full((1, 2), 3.0)) and layer.bias.grad is None

# the ranks' shares of each global micro-batch partition it
plan = BatchPlan(20, 4, seed=1, lengths=list(range(20)))
for i in range(8):
    shares = [None, None]
    torch.distributed.all_gather_object(shares, plan.micro_batch(i))
    assert sorted(shares[0] + shares[1]) == sorted(plan.global_micro_batch(i)) and len(shares[rank]) == 2

dist.barrier()
dist.print0("collectives ok")
dist.shutdown()
