"""Reward models GGRO can steer with: the interface, Hugging Face classifiers, custom scorers."""

from .base import RewardModel, RewardScores, RewardSession, RewardUsage
from .hf import HFRewardModel
from .module import EmbeddingReward
from .vocab import shares_vocabulary

__all__ = [
    "EmbeddingReward",
    "HFRewardModel",
    "RewardModel",
    "RewardScores",
    "RewardSession",
    "RewardUsage",
    "shares_vocabulary",
]
