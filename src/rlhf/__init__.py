"""rlhf: the whole loop of reinforcement learning from human feedback, on a laptop or a GPU.

The Python API mirrors the commands (rlhf.api): `rlhf.sft`, `rlhf.rm`, `rlhf.dpo`, `rlhf.ppo`,
`rlhf.pretrain`, `rlhf.generate`, `rlhf.evaluate`, `rlhf.evaluate_rm`, with the config classes
`rlhf.SFTConfig`, `rlhf.RewardConfig`, `rlhf.DPOConfig`, `rlhf.PPOConfig`, ... Names resolve on
first use, so `import rlhf` (and the CLI's start) stays light.
"""

__version__ = "0.1.0"

_API = ("pretrain", "sft", "rm", "dpo", "ppo", "generate", "evaluate", "evaluate_rm", "RunResult")
_CONFIGS = ("PretrainConfig", "SFTConfig", "RewardConfig", "DPOConfig", "PPOConfig", "GenerateConfig",
            "EvalPolicyConfig", "EvalRMConfig", "TrainConfig")

__all__ = [*_API, *_CONFIGS, "__version__"]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    if name in _CONFIGS:
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module 'rlhf' has no attribute {name!r}")
