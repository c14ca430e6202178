"""Segments and the rules that end them, shared by every policy backend.

A *segment* starts at a token (forced, or chosen by the base rule) and runs
until the next trigger — a position whose entropy is at or above the threshold
with at least ``min_tokens`` tokens produced since the segment began — or until
the response ends (EOS, a stop sequence, the token budget). Backends decide
*how* tokens are produced (an in-process KV cache, a serving engine); these
rules decide, token by token, where a segment ends, so every backend ends
segments at exactly the same places.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import GenerationCancelled
from .stopping import StopSequences

if TYPE_CHECKING:
    from ..backends.base import NextToken


@dataclass
class Segment:
    """One row's decoded segment."""

    tokens: list[int] = field(default_factory=list)
    """Tokens of the segment (EOS excluded; a stop sequence trimmed away)."""
    finish: str | None = None
    """None when it ended at a trigger (or paused); else ``"eos"``, ``"stop"`` or ``"length"``."""
    end: NextToken | None = None
    """The policy's next-token distribution after the segment (set when ``finish`` is None)."""
    text_limit: int | None = None
    """With ``finish == "stop"``: length of the response text before the stop sequence."""
    entropies: list[float] = field(default_factory=list)
    """Entropy at each position of the segment."""
    paused: bool = False
    """True when decoding stopped at ``max_tokens`` without reaching a trigger or the end."""
    first_token: int | None = None
    """The token the segment started with, kept when a stop sequence trims it away: an emptied
    segment is the legitimate candidate "end the response right here"."""


@dataclass
class SegmentRules:
    """Where segments end for one generation: trigger threshold, EOS, stop sequences, token budget."""

    tokenizer: Any
    threshold: float
    """Entropy at or above which a position is a trigger (``inf``: never)."""
    min_tokens: int
    """Fewest tokens a segment holds before a trigger may end it."""
    eos_ids: set[int]
    stops: StopSequences
    max_new_tokens: int
    cancelled: threading.Event = field(default_factory=threading.Event)
    """Set from any thread to stop the generation at the backend's next step."""

    def check_cancelled(self) -> None:
        """Raise ``GenerationCancelled`` if the generation was cancelled; backends call it every step."""
        if self.cancelled.is_set():
            raise GenerationCancelled("the generation was cancelled")

    def row(self, committed: Sequence[int], *, min_tokens: int | None = None, max_tokens: int | None = None) -> RowRules:
        """Rules for one batch of rows continuing ``committed`` (the response so far)."""
        return RowRules(self, list(committed), self.min_tokens if min_tokens is None else min_tokens, max_tokens)

    def text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


class RowRules:
    """``SegmentRules`` bound to the committed response that a batch of rows continues."""

    def __init__(self, rules: SegmentRules, committed: list[int], min_tokens: int, max_tokens: int | None) -> None:
        self.rules = rules
        self.committed = committed
        self.min_tokens = min_tokens
        self.max_tokens = max_tokens
        # Without the tail of U+FFFD: an incomplete multi-byte character that a later token completes
        # decodes shorter, so a stop ending in it starts before the committed text's current length.
        self._committed_text_len = len(rules.text(committed).rstrip("\ufffd")) if rules.stops else 0

    def ends_before(self, seg: Segment, entropy: float, *, forced: bool = False) -> bool:
        """Whether ``seg`` ends before the position about to be decoded: at a trigger, or paused.

        ``forced``: a grammar allows a single token here, so there is no decision to steer and
        the position is never a trigger. When ``seg`` ends, the backend sets ``seg.end`` to the
        next-token distribution there.
        """
        if len(seg.tokens) >= self.min_tokens and entropy >= self.rules.threshold and not forced:
            return True
        if self.max_tokens is not None and len(seg.tokens) >= self.max_tokens:
            seg.paused = True
            return True
        return False

    def add(self, seg: Segment, token: int, entropy: float) -> bool:
        """Append ``token`` to ``seg``; False when that ends it (EOS, a stop sequence, the budget)."""
        rules = self.rules
        if token in rules.eos_ids:
            seg.finish = "eos"
            return False
        if not seg.tokens:
            seg.first_token = token
        seg.tokens.append(token)
        seg.entropies.append(entropy)
        if rules.stops and self._hit_stop(seg):
            return False
        if len(self.committed) + len(seg.tokens) >= rules.max_new_tokens:
            seg.finish = "length"
            return False
        return True

    def _hit_stop(self, seg: Segment) -> bool:
        rules, committed = self.rules, self.committed
        response = committed + seg.tokens
        text = rules.text(response)
        # A stop may straddle the committed text and the segment: search a little before it.
        longest = max(len(s) for s in rules.stops.stops)
        index = rules.stops.find(text, max(0, self._committed_text_len - longest + 1))
        if index is None:
            return False
        # Keep the fewest tokens whose text covers everything before the stop sequence.
        keep = len(response)
        while keep > len(committed) and len(rules.text(response[: keep - 1])) >= index:
            keep -= 1
        del seg.tokens[keep - len(committed) :]
        del seg.entropies[keep - len(committed) :]
        seg.finish = "stop"
        seg.text_limit = index
        return True
