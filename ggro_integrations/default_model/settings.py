"""The embedded default's measured ``GGROConfig`` settings, and the one place they are applied."""

from __future__ import annotations

from typing import Any

DEFAULT_POLICY_SETTINGS: dict[str, Any] = {"entropy_threshold": 3.0, "nudge_top_k": 5}
"""``GGROConfig`` values measured for SmolLM2-135M steered by the default reward head (docs/default-model.md).

Re-measured with the on-policy head on validation prompts (16 new tokens): against
τ = 2.5 / K = 25 (sequential S = 8, and parallel S = 4) these keep the same over-refusal (none) and
factual accuracy, no fewer refusals (none was a real refusal under any setting), and the lowest cost (1.24x
greedy's policy tokens against 1.64-1.69x); K = 25 also produced degenerate text the head
scored above greedy's ("P: 1\n\nP: 1"). SmolLM2's refusal opening "I" is inside the top 5 at the
first token on only 1 of 8 harmful prompts measured (top 25 on 7), so no setting makes it refuse.
S = 8 and sequential refinement are the ``GGROConfig`` defaults.
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
