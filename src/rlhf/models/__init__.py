"""Models: loading and saving Hugging Face directories, the embedded default, reward models."""

from rlhf.models.reward import RewardModel, load_reward_model

__all__ = ["RewardModel", "load_reward_model"]
