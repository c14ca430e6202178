"""The embedded default reward, importable from here as before; it lives in ``default_model/reward.py``.

The measured settings for the default policy (``DEFAULT_POLICY_SETTINGS``) live in
``default_model/settings.py``.
"""

from ..default_model.reward import (
    DEFAULT_REWARD_NAME,
    HEAD_FILE,
    METADATA_FILE,
    PolicyFeatureClassifier,
    head_metadata,
    head_path,
    load_default_reward_model,
    load_head,
    reward_view,
)
from ..default_model.settings import DEFAULT_ENTROPY_THRESHOLD, DEFAULT_POLICY_SETTINGS

__all__ = [
    "DEFAULT_ENTROPY_THRESHOLD",
    "DEFAULT_POLICY_SETTINGS",
    "DEFAULT_REWARD_NAME",
    "HEAD_FILE",
    "METADATA_FILE",
    "PolicyFeatureClassifier",
    "head_metadata",
    "head_path",
    "load_default_reward_model",
    "load_head",
    "reward_view",
]
