"""Reward models GGRO can steer with: the interface, Hugging Face classifiers, custom scorers."""

from .base import RewardModel, RewardScores, RewardSession, RewardUsage
from .callable import TextScorerReward
from .composite import CompositeReward
from .hf import HFRewardModel
from .module import EmbeddingReward
from .registry import (
    clear_reward_cache,
    list_reward_models,
    load_reward_model,
    register_reward_model,
    reward_load_count,
    unregister_reward_model,
)
from .vocab import shares_vocabulary

__all__ = [
    "CompositeReward",
    "EmbeddingReward",
    "HFRewardModel",
    "RewardModel",
    "RewardScores",
    "RewardSession",
    "RewardUsage",
    "TextScorerReward",
    "clear_reward_cache",
    "list_reward_models",
    "load_reward_model",
    "register_reward_model",
    "reward_load_count",
    "shares_vocabulary",
    "unregister_reward_model",
]
