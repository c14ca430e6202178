"""Choosing ``entropy_threshold`` from the policy itself.

Entropy scales differ a lot between models (a 135M model sits above 1.5 nats
on about half of its tokens; an 8B model far less often), so a threshold that
suits one policy makes another intervene everywhere or nowhere. Given a few
representative prompts and the share of positions you want GGRO to consider,
``calibrate_entropy_threshold`` decodes them greedily and returns the matching
quantile of the policy's own next-token entropies.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..conversation import Prompt
from ..errors import ConfigError


def policy_entropies(decoder: Any, prompts: Sequence[Prompt], *, max_new_tokens: int = 64) -> list[float]:
    """Entropy at every position of the greedy responses to ``prompts``."""
    entropies: list[float] = []
    for prompt in prompts:
        # Threshold 0 with segments of one token makes every position a trigger; no refinement runs.
        result = decoder.generate(
            prompt,
            strategy="ggro",
            num_refinements=0,
            entropy_threshold=0.0,
            min_segment_tokens=1,
            max_new_tokens=max_new_tokens,
        )
        entropies.extend(e.entropy for e in result.interventions)
    return entropies


def calibrate_entropy_threshold(
    decoder: Any, prompts: Sequence[Prompt], target_rate: float = 0.2, *, max_new_tokens: int = 64
) -> float:
    """The ``entropy_threshold`` at which about ``target_rate`` of greedy positions reach it.

    ``target_rate`` is the share of positions whose entropy is at or above the
    returned threshold (before ``min_segment_tokens`` spaces triggers out).
    """
    if not 0 < target_rate < 1:
        raise ConfigError(f"target_rate must be in (0, 1); got {target_rate}.")
    if not prompts:
        raise ConfigError("calibrate_entropy_threshold needs at least one prompt.")
    values = torch.tensor(policy_entropies(decoder, prompts, max_new_tokens=max_new_tokens))
    if values.numel() == 0:
        raise ConfigError("the prompts produced no tokens to calibrate on; use longer responses or other prompts.")
    return float(torch.quantile(values, 1.0 - target_rate))
