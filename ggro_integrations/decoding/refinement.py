"""Refinement at one trigger: decode nudged candidates, keep the best segment.

``sequential`` (the paper) tries one candidate at a time and re-ranks from the
best segment so far; ``parallel`` takes the top candidates from one gradient
and decodes them as one batch. Both keep the unmodified segment on ties.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..backends.base import NextToken
from .generation import Generation, Scored, first_token
from .nudging import rank_nudges


@dataclass
class Trigger:
    """What refinement starts from at one trigger."""

    start: NextToken
    """The policy's distribution at the trigger."""
    original: Scored
    """The unmodified segment, scored."""
    candidates: list[int]
    """The policy's top-K at the trigger (EOS excluded)."""
    gains: torch.Tensor
    """Predicted reward change of putting each candidate in place of the original's first token."""


def refine(gen: Generation, trigger: Trigger) -> tuple[Scored, list[Scored], str]:
    """``(winner, candidates tried, why refinement stopped)`` at ``trigger``."""
    if gen.cfg.refinement == "parallel":
        return refine_parallel(gen, trigger)
    return refine_sequential(gen, trigger)


def _ranked(gen: Generation, trigger: Trigger, gains: torch.Tensor, tried: set[int], count: int) -> list[tuple[int, float]]:
    cfg = gen.cfg
    return rank_nudges(
        trigger.candidates,
        gains,
        tried,
        count=count,
        selection=cfg.nudge_selection,
        temperature=cfg.nudge_temperature,
        generator=gen.nudge_generator,
    )


def refine_sequential(gen: Generation, trigger: Trigger) -> tuple[Scored, list[Scored], str]:
    best = trigger.original
    tried = {first_token(best.segment)}
    gains: torch.Tensor | None = trigger.gains
    trials: list[Scored] = []
    for _ in range(gen.cfg.num_refinements):
        if gains is None:
            # Gains are relative to the best segment so far; they only change when it does.
            gains = gen.gains(best.segment, trigger.candidates)
        ranked = _ranked(gen, trigger, gains, tried, 1)
        if not ranked:
            return best, trials, "no_positive_gain"
        token, gain = ranked[0]
        tried.add(token)
        segment = gen.decode(trigger.start, [token])[0]
        item = gen.trial(segment, gain)
        gen.score([item])
        trials.append(item)
        if item.reward > best.reward:  # ties keep the earlier (the unmodified first)
            best = item
            # An emptied segment ("stop right here") has no token to differentiate at: the
            # ranking from the last one stands.
            gains = None if segment.tokens else gains
    return best, trials, "budget"


def refine_parallel(gen: Generation, trigger: Trigger) -> tuple[Scored, list[Scored], str]:
    count = gen.cfg.num_refinements
    ranked = _ranked(gen, trigger, trigger.gains, {first_token(trigger.original.segment)}, count)
    if not ranked:
        return trigger.original, [], "no_positive_gain"
    segments = gen.decode(trigger.start, [t for t, _ in ranked])
    trials = [gen.trial(seg, gain) for seg, (_, gain) in zip(segments, ranked)]
    gen.score(trials)
    best = trigger.original
    for item in trials:
        if item.reward > best.reward:  # ties keep the earlier (the unmodified first)
            best = item
    return best, trials, "budget" if len(ranked) == count else "no_positive_gain"
