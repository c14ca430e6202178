"""The embedded default's measured ``GGROConfig`` settings, and the one place they are applied."""

from __future__ import annotations

from typing import Any

DEFAULT_POLICY_SETTINGS: dict[str, Any] = {"entropy_threshold": 3.0, "nudge_top_k": 5}
"""``GGROConfig`` values measured for SmolLM2-135M steered by the default reward head (docs/default-model.md).

SmolLM2-135M is at or above the paper's 1.5 nats on about half its greedy tokens and at or
above 3.0 on about a quarter, so 3.0 keeps triggers to its most uncertain positions (including
the first token of most risky answers). At those positions its top-25 holds many junk tokens
the small head can be fooled by; the top 5 keep nudges fluent.
"""

DEFAULT_ENTROPY_THRESHOLD: float = DEFAULT_POLICY_SETTINGS["entropy_threshold"]
"""The measured entropy threshold for the default policy (see docs/default-model.md)."""


def with_policy_settings(model: Any, config: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` completed with the measured settings when ``model`` is ``"default"``.

    Thresholds are a property of the policy's entropy scale, so the embedded default comes with
    its own; anything the caller set explicitly wins, and an explicit ``config`` is taken as
    the caller's complete choice (no defaults are mixed into it). ``build_decoder`` is the
    one caller: every front door builds its decoder there.
    """
    merged = dict(overrides)
    if isinstance(model, str) and model == "default" and config is None:
        for name, value in DEFAULT_POLICY_SETTINGS.items():
            if merged.get(name) is None:  # None means "not set" for every GGROConfig override
                merged[name] = value
    return merged
