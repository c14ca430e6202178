"""The GGRO loop (greedy is the same loop with no triggers).

A *free run* of base decoding up to the first trigger, then a chain of
segments: at each trigger the unmodified segment is decoded and scored,
nudged candidates from the policy's top-K are decoded from the same prefix and
scored (``refinement.py``), the best segment is committed, and decoding goes on
from its end — which is the next trigger, or the end of the response.
"""

from __future__ import annotations

import time
from typing import Generator

from ..backends.base import NextToken
from ..events import InterventionEvent
from .generation import Generation, Scored, first_token
from .refinement import Trigger, refine
from .result import GGROResult, StreamItem
from .segments import Segment


def run_ggro(gen: Generation) -> Generator[StreamItem, None, GGROResult]:
    """Decode with GGRO (or plain greedy/sampling), yielding committed text and events in order."""
    start = gen.policy.start(gen.hooks)
    # Before the first trigger every token is final: release them one by one as they come.
    while True:
        free = gen.decode(start, [None], min_tokens=0, max_tokens=1)[0]
        finish = gen.commit(free)
        yield from gen.response.release(final=finish is not None)
        if not free.paused:
            break
        assert free.end is not None
        start = free.end
    segment = free
    while finish is None:
        assert segment.end is not None
        segment, event = steer(gen, segment.end)
        if event is not None:
            gen.events.append(event)
            yield event
        finish = gen.commit(segment)
        yield from gen.response.release(final=finish is not None)
    return gen.result(finish)


def steer(gen: Generation, start: NextToken) -> tuple[Segment, InterventionEvent | None]:
    """Handle the trigger at the end of the response: the accepted segment and its event."""
    cfg = gen.cfg
    started = time.perf_counter()
    base = gen.decode(start, [None])[0]
    if not base.tokens:
        # The base rule ends the response right here (EOS, or a token that completes a stop
        # sequence): the user's end condition, as final as EOS, so nothing to steer.
        return base, None
    original = gen.trial(base, None, is_original=True)
    winner, tried, stop_reason = original, [], "disabled"
    if cfg.num_refinements > 0:
        candidates = start.top_k(cfg.nudge_top_k, gen.eos_ids)
        gains = gen.score_with_gains(original, candidates)
        winner, tried, stop_reason = refine(gen, Trigger(start, original, candidates, gains))
    return winner.segment, _event(gen, start, original, winner, tried, stop_reason, started)


def _event(
    gen: Generation,
    start: NextToken,
    original: Scored,
    winner: Scored,
    tried: list[Scored],
    stop_reason: str,
    started: float,
) -> InterventionEvent:
    chosen = first_token(winner.segment)
    return InterventionEvent(
        trigger_index=len(gen.events),
        position=len(gen.committed),
        char_offset=len(gen.text(gen.committed)),
        entropy=start.entropy,
        threshold=gen.cfg.entropy_threshold,
        original_token_id=original.trial.token_id,
        original_token=original.trial.token,
        chosen_token_id=chosen,
        chosen_token=gen.text([chosen]),
        base_reward=original.trial.reward,
        best_reward=winner.trial.reward,
        accepted=winner is not original,
        refinements_used=len(tried),
        seconds=time.perf_counter() - started,
        original_segment=original.trial.segment,
        chosen_segment=winner.trial.segment,
        candidates=[original.trial] + [c.trial for c in tried],
        stop_reason=stop_reason,
        reward_model=gen.call.reward.name if gen.call.reward else "",
        constrained=start.constrained,
        base_reward_components=dict(original.trial.reward_components),
        best_reward_components=dict(winner.trial.reward_components),
    )
