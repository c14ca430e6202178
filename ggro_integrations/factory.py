"""``build_decoder``: a ``GGRODecoder`` from names, with models loaded once and shared.

Every front door (CLI, LangChain, LlamaIndex) builds its decoder here, so a
policy or reward model named in several places is loaded a single time per
process (``load_policy`` and ``load_reward_model`` cache by id, device, dtype).
"""

from __future__ import annotations

from typing import Any

import torch

from .config import GGROConfig
from .decoding import GGRODecoder
from .default_model.settings import with_policy_settings
from .policies import load_policy
from .rewards.registry import load_reward_model


def build_decoder(
    model: Any = "default",
    reward_model: Any = "default",
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    config: GGROConfig | None = None,
    **overrides: Any,
) -> GGRODecoder:
    """A decoder for ``model`` (``"default"``, a hub id, a path, or ``(model, tokenizer)``)
    steered by ``reward_model`` (any spec ``load_reward_model`` accepts).

    For ``model="default"`` the measured settings of the embedded default
    (``default_model.DEFAULT_POLICY_SETTINGS``: entropy threshold 3.0, top-K 5)
    apply unless ``config`` or explicit keyword arguments say otherwise.

    Example:
        >>> decoder = build_decoder("default", "default", entropy_threshold=2.5)  # doctest: +SKIP
    """
    overrides = with_policy_settings(model, config, overrides)
    policy, tokenizer = load_policy(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    reward = None if reward_model is None else load_reward_model(reward_model, device=device, dtype=dtype)
    return GGRODecoder(policy, tokenizer, reward, config=config, **overrides)
