"""Models: loading and saving Hugging Face directories, the embedded default, reward models.

`RewardModel` and `load_reward_model` are imported on first use (they need torch), so that
`rlhf.models.hub` (Hub ids, no torch) can be imported alone: the CLI's preflight names a
mistyped --model before torch has loaded.
"""

__all__ = ["RewardModel", "load_reward_model"]


def __getattr__(name: str):
    if name in __all__:
        from rlhf.models import reward

        return getattr(reward, name)
    raise AttributeError(f"module 'rlhf.models' has no attribute {name!r}")
