"""Choosing nudges: the policy's top-K candidates ranked by predicted reward gain."""

from __future__ import annotations

from typing import Collection

import torch


def top_k_candidates(logits: torch.Tensor, k: int, exclude: Collection[int]) -> list[int]:
    """The policy's ``k`` most likely next tokens (``logits`` is ``[1, vocab]``), minus ``exclude``.

    Restricting nudges to the policy's own top-K keeps them on its distribution:
    GGRO's defence against reward hacking.
    """
    order = logits[0].topk(min(k + len(exclude), logits.shape[-1])).indices.tolist()
    return [t for t in order if t not in exclude][:k]


def rank_nudges(
    candidates: list[int],
    gains: torch.Tensor,
    tried: Collection[int],
    *,
    count: int,
    selection: str,
    temperature: float,
    generator: torch.Generator | None,
) -> list[tuple[int, float]]:
    """Up to ``count`` untried candidates with positive predicted gain, in the order to try them.

    ``"greedy"`` orders by gain; ``"sample"`` draws without replacement with
    probability ∝ exp(gain / temperature).
    """
    pool = [(c, float(g)) for c, g in zip(candidates, gains.tolist()) if c not in tried and g > 0]
    if not pool:
        return []
    if selection == "greedy":
        return sorted(pool, key=lambda cg: -cg[1])[:count]
    values = torch.tensor([g for _, g in pool], dtype=torch.float64)
    probs = torch.softmax(values / temperature, dim=0)
    picks = torch.multinomial(probs, min(count, len(pool)), replacement=False, generator=generator)
    return [pool[i] for i in picks.tolist()]
