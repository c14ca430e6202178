"""Stop sequences: found exactly in the decoded text, whatever tokens they span."""

from __future__ import annotations

from typing import Sequence


class StopSequences:
    """Finds the first stop sequence in a text and how much of a streamed tail to hold back."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)

    def __bool__(self) -> bool:
        return bool(self.stops)

    def find(self, text: str, start: int = 0) -> int | None:
        """Index where the earliest stop sequence begins in ``text`` (searching from ``start``), or None."""
        hits = [i for i in (text.find(s, start) for s in self.stops) if i >= 0]
        return min(hits) if hits else None

    def holdback(self, text: str) -> int:
        """Length of the longest tail of ``text`` that could still grow into a stop sequence."""
        best = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:k]):
                    best = k
                    break
        return best
