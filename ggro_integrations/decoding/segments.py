"""Decoding runs of tokens that end at the next trigger, in one or many rows.

A *segment* starts at a token (forced, or chosen by the base rule) and runs
until the next trigger — a position whose entropy is at or above the threshold
with at least ``min_tokens`` tokens produced since the segment began — or until
the response ends (EOS, a stop sequence, the token budget). Rows of a batch are
decoded in lockstep over one batched cache and finish independently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .policy import PolicyRunner
from .rules import BaseRule, token_entropy
from .stopping import StopSequences


@dataclass
class Segment:
    tokens: list[int] = field(default_factory=list)
    """Tokens of the segment (EOS excluded; a stop sequence trimmed away)."""
    finish: str | None = None
    """None when it ended at a trigger; else ``"eos"``, ``"stop"`` or ``"length"``."""
    end_logits: torch.Tensor | None = None
    """Policy logits for the position after the segment (set when ``finish`` is None)."""
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
class SegmentDecoder:
    """Everything needed to decode segments for one generation."""

    runner: PolicyRunner
    tokenizer: Any
    rule: BaseRule
    threshold: float
    min_tokens: int
    eos_ids: set[int]
    stops: StopSequences
    max_new_tokens: int

    def decode(
        self,
        cache: Any,
        logits: torch.Tensor,
        committed: Sequence[int],
        first_tokens: Sequence[int | None],
        *,
        min_tokens: int | None = None,
        max_tokens: int | None = None,
    ) -> list[Segment]:
        """Decode one segment per row of ``logits`` (``[rows, vocab]``), extending ``cache`` in place.

        ``first_tokens[i]`` forces row ``i``'s first token (None: the base rule
        picks it). ``min_tokens`` overrides the minimum length before a trigger
        may end a row (0 lets a row end before its first token). ``max_tokens``
        pauses a row after that many tokens (``paused``, with ``end_logits`` set)
        so a caller can release text as it is decoded.

        With one row, ``cache`` ends holding exactly the prefix and the segment.
        With several, rows are dropped from the cache as they finish, so
        afterwards it holds an unspecified subset: crop it back to the prefix.
        """
        minimum = self.min_tokens if min_tokens is None else min_tokens
        segments = [Segment() for _ in range(logits.shape[0])]
        active = list(range(len(segments)))  # segment index of each cache / logits row
        committed = list(committed)
        committed_text_len = len(self._text(committed)) if self.stops else 0
        while active:
            # One device-to-host transfer each per step, not one per row (matters on GPUs).
            entropy = token_entropy(logits).tolist()
            chosen = self.rule(logits).tolist()
            still: list[int] = []  # rows of this step that go on
            for row, i in enumerate(active):
                seg = segments[i]
                h = entropy[row]
                if len(seg.tokens) >= minimum and h >= self.threshold:
                    seg.end_logits = logits[row : row + 1].clone()
                    continue
                if max_tokens is not None and len(seg.tokens) >= max_tokens:
                    seg.end_logits, seg.paused = logits[row : row + 1].clone(), True
                    continue
                forced = first_tokens[i] if not seg.tokens else None
                token = int(forced) if forced is not None else chosen[row]
                if token in self.eos_ids:
                    seg.finish = "eos"
                    continue
                if not seg.tokens:
                    seg.first_token = token
                seg.tokens.append(token)
                seg.entropies.append(h)
                if self.stops and self._hit_stop(seg, committed, committed_text_len):
                    continue
                if len(committed) + len(seg.tokens) >= self.max_new_tokens:
                    seg.finish = "length"
                    continue
                still.append(row)
            if not still:
                break
            if len(still) < len(active):
                # Finished rows leave the batch, so no compute is spent on them. Their cache rows
                # go too: a caller that needs a finished row's cache re-feeds its segment.
                cache.batch_select_indices(torch.tensor(still, device=logits.device))
                active = [active[row] for row in still]
            logits = self.runner.forward([[segments[i].tokens[-1]] for i in active], cache)
        return segments

    def _text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _hit_stop(self, seg: Segment, committed: list[int], committed_text_len: int) -> bool:
        response = committed + seg.tokens
        text = self._text(response)
        # A stop may straddle the committed text and the segment: search a little before it.
        longest = max(len(s) for s in self.stops.stops)
        index = self.stops.find(text, max(0, committed_text_len - longest + 1))
        if index is None:
            return False
        # Keep the fewest tokens whose text covers everything before the stop sequence.
        keep = len(response)
        while keep > len(committed) and len(self._text(response[: keep - 1])) >= index:
            keep -= 1
        del seg.tokens[keep - len(committed) :]
        seg.finish = "stop"
        seg.text_limit = index
        return True
