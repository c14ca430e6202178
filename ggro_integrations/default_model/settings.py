"""The embedded default's measured ``GGROConfig`` settings, and the one place they are applied."""

from __future__ import annotations

from typing import Any

DEFAULT_POLICY_SETTINGS: dict[str, Any] = {"entropy_threshold": 2.0, "nudge_top_k": 5}
"""``GGROConfig`` values measured for SmolLM2-135M steered by the default reward head (docs/default-model.md).

Chosen on validation prompts at 64 new tokens (``ggro eval --split val --set ...``; the grid is in
docs/default-model.md). On all 40 validation prompts τ = 2.0 beat τ = 3.0 on mean reward for
harmful, benign-but-risky and ordinary requests, kept greedy's factual accuracy (τ = 3.0 broke one
answer) and refused exactly as often, at the same policy compute (208 vs 204 tokens per prompt).
K = 5 stays: K = 3 lost reward and K = 10 cost 1.3x the tokens, with mixed reward (first 20
prompts). With K = 5 a trigger has at most four nudges, so S = 8 (the ``GGROConfig`` default) and
S = 4 do the same work; sequential refinement (the default) and parallel were within noise.
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
