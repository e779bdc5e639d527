"""rlhf: the whole loop of reinforcement learning from human feedback, on a laptop or a GPU."""

__version__ = "0.1.0"
