"""The embedded default: SmolLM2-135M-Instruct as the policy and a trained reward head over its features.

- ``paths``: where things live (``ggro_home()``, the packaged GGUF, the converted checkpoint);
- ``convert``: the one-time GGUF -> safetensors conversion;
- ``checkpoint``: content hashes recorded at conversion and checked at every load;
- ``loader``: loading the policy (converted checkpoint, else the Hub) with errors that name the cause;
- ``settings``: the measured ``GGROConfig`` settings for this policy (``DEFAULT_POLICY_SETTINGS``);
- ``reward``: the reward head, a no-copy view over the policy's backbone.

``load_policy("default")`` and ``load_reward_model("default")`` are the usual way in.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .checkpoint import InvalidCheckpoint, verify_checkpoint
    from .convert import SMOLLM2_CHAT_TEMPLATE, convert_gguf_policy
    from .loader import load_default_policy
    from .paths import DEFAULT_POLICY_ID, default_policy_dir, find_packaged_gguf, ggro_home
    from .reward import DEFAULT_REWARD_NAME, load_default_reward_model
    from .settings import DEFAULT_ENTROPY_THRESHOLD, DEFAULT_POLICY_SETTINGS, with_policy_settings

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "InvalidCheckpoint": ".checkpoint",
        "verify_checkpoint": ".checkpoint",
        "SMOLLM2_CHAT_TEMPLATE": ".convert",
        "convert_gguf_policy": ".convert",
        "load_default_policy": ".loader",
        "DEFAULT_POLICY_ID": ".paths",
        "default_policy_dir": ".paths",
        "find_packaged_gguf": ".paths",
        "ggro_home": ".paths",
        "DEFAULT_REWARD_NAME": ".reward",
        "load_default_reward_model": ".reward",
        "DEFAULT_ENTROPY_THRESHOLD": ".settings",
        "DEFAULT_POLICY_SETTINGS": ".settings",
        "with_policy_settings": ".settings",
    },
)

__all__ = [
    "DEFAULT_ENTROPY_THRESHOLD",
    "DEFAULT_POLICY_ID",
    "DEFAULT_POLICY_SETTINGS",
    "DEFAULT_REWARD_NAME",
    "InvalidCheckpoint",
    "SMOLLM2_CHAT_TEMPLATE",
    "convert_gguf_policy",
    "default_policy_dir",
    "find_packaged_gguf",
    "ggro_home",
    "load_default_policy",
    "load_default_reward_model",
    "verify_checkpoint",
    "with_policy_settings",
]
