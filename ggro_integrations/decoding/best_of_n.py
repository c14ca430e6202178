"""The Best-of-N baseline: N samples from the prompt in one batch, keep the highest reward."""

from __future__ import annotations

from typing import Generator

import torch

from .generation import Generation
from .result import GGROResult, StreamItem
from .segments import Segment


def run_best_of_n(gen: Generation) -> Generator[StreamItem, None, GGROResult]:
    """Yields the chosen sample as one ``TextDelta``: its answer is known only once every sample ends."""
    count = gen.cfg.best_of_n
    start = gen.policy.start(gen.hooks)
    samples = gen.decode(start, [None] * count, min_tokens=0)
    assert gen.reward is not None
    scores = gen.reward.score([], [s.tokens for s in samples])
    best = int(torch.argmax(scores.values))
    gen.commit(samples[best])
    yield from gen.response.release(final=True)
    result = gen.result(samples[best].finish or "length", reward=scores.row(best))
    result.samples = [
        {"text": _text(gen, s), "reward": float(scores.values[i]), "finish_reason": s.finish}
        for i, s in enumerate(samples)
    ]
    return result


def _text(gen: Generation, segment: Segment) -> str:
    text = gen.text(segment.tokens)
    return text if segment.text_limit is None else text[: segment.text_limit]
