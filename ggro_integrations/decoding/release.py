"""Releasing committed text to a stream: only what no stop sequence or split character can still change."""

from __future__ import annotations

from typing import Any

from ..events import TextDelta
from .stopping import StopSequences


class TextRelease:
    """Turns the growing committed response into ``TextDelta`` s.

    Text is final once committed, except its tail: the start of a stop sequence
    (the stop may complete with the next token, and then that text is never
    shown) and an incomplete multi-byte character.
    """

    def __init__(self, tokenizer: Any, stops: StopSequences) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.tokens: list[int] = []
        self.text_limit: int | None = None
        self.released = 0  # characters of the response already streamed
        self.released_tokens = 0  # committed tokens whose text has been (at least partly) streamed

    def text(self) -> str:
        """The committed response text (cut before a stop sequence once one is found)."""
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        return text if self.text_limit is None else text[: self.text_limit]

    def commit(self, tokens: list[int], text_limit: int | None = None) -> None:
        self.tokens.extend(tokens)
        if text_limit is not None:
            self.text_limit = text_limit

    def release(self, final: bool) -> list[TextDelta]:
        """The committed text not yet streamed (all of it when ``final``)."""
        text = self.text()
        end = len(text)
        if not final:
            while end > self.released and text[end - 1] == "\ufffd":
                end -= 1  # an incomplete multi-byte character
            # Then what could still grow into a stop sequence, judged on the text before that
            # character: the stop may continue through it ("r" before the bytes of "ꄩ" in "rꄩ%").
            end -= self.stops.holdback(text[:end])
        if end <= self.released:
            if not (final and len(self.tokens) > self.released_tokens):
                return []
            end = self.released  # no new text, but the last tokens (e.g. a special token) must be reported
        delta = TextDelta(text[self.released : end], self.tokens[self.released_tokens :])
        self.released, self.released_tokens = end, len(self.tokens)
        return [delta]
