"""Closing a constrained output before the token budget runs out.

A grammar says which tokens may come next, not how soon the output ends: a model that never
writes the closing quote of an unbounded string (a random test model always; a small model
rambling in a ``"description"``) reaches ``max_new_tokens`` with half a JSON object, which no
parser reads. :class:`BudgetCloser` watches the budget: once the tokens left are no more than
``margin`` beyond what it takes to close the output, it forces the shortest way it finds to a
state the grammar accepts (``can_end``), one token per step.

The closing path is found greedily from a fork of the row's state: at each step the first
allowed token in a fixed preference order — tokens made only of ``"``, ``}``, ``]`` that start
with the quote, then those without one (longest first in both; a quote first, because inside a
string ``]]`` is text that keeps it open), then other non-whitespace tokens (shortest first),
whitespace last. That closes strings,
objects and arrays as soon as the grammar permits, skips optional properties, and writes the
shortest literal where a value is still required. It is a heuristic: a grammar whose shortest
completion needs many tokens it ranks late (long required strings under ``minLength``) can still
run out, and the output then ends with ``finish_reason="length"`` as before. Steps on the
closing path allow a single token, so they are never GGRO triggers. Once closing has begun, the
row ends (EOS) as soon as the grammar accepts: there is no budget left for another tool call.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .grammar import GrammarState

CLOSERS = frozenset('"}]')

_ORDERS: dict[int, np.ndarray] = {}
_LOCK = threading.Lock()


def preference_order(tokenizer: Any, vocab_size: int) -> np.ndarray:
    """Token ids ``0..vocab_size-1`` in the closing preference order (cached per tokenizer backend)."""
    key = id(getattr(tokenizer, "backend_tokenizer", tokenizer))
    with _LOCK:
        hit = _ORDERS.get(key)
    if hit is not None and hit.shape[0] == vocab_size:
        return hit
    texts = tokenizer.batch_decode([[i] for i in range(min(vocab_size, len(tokenizer)))])
    keys = []
    for i, text in enumerate(texts):
        stripped = text.strip()
        if stripped and set(stripped) <= CLOSERS:
            # A quote first: inside a string, ``]]`` or ``}`` are just characters that keep it open.
            keys.append((0 if stripped[0] == '"' else 1, -len(stripped), i))
        elif stripped:
            keys.append((2, len(stripped), i))
        else:
            keys.append((3, len(text), i))
    keys += [(4, 0, i) for i in range(len(texts), vocab_size)]
    order = np.array([k[2] for k in sorted(keys)], dtype=np.int64)
    with _LOCK:
        _ORDERS[key] = order
    return order


class BudgetCloser:
    """Forces the closing path of a row's grammar when the budget left is about to be too small.

    ``budget`` is the response's token budget (``max_new_tokens``); a row's position is the
    number of tokens its grammar state consumed (the grammar starts with the response). A check
    simulates the closing path (one mask per token on it), so checks are spaced out while the
    budget left is large next to the path: assuming one token lengthens the path by at most
    ``growth`` tokens, the next check comes before the slack could be used up.
    """

    __slots__ = ("_cache", "_closing", "_next_check", "_path", "budget", "growth", "longest", "margin", "order")

    def __init__(
        self, order: np.ndarray, budget: int, *, margin: int = 2, growth: int = 8, longest: int = 128
    ) -> None:
        self.order = order
        self.budget = int(budget)
        self.margin = int(margin)
        """Tokens of slack kept: closing starts when the path plus this reaches the budget left."""
        self.growth = int(growth)
        self.longest = int(longest)
        """Longest closing path looked for (a longer one is not found, and the output may run out)."""
        self._cache: tuple[int, int | None] | None = None
        self._next_check = 0
        self._path: list[int] = []  # the closing path from the current state, while it is followed
        self._closing = False  # once closing has begun, the row ends as soon as the grammar allows

    def token(self, state: GrammarState) -> int | None:
        """The token this row must take now to still close within budget, or None (free choice)."""
        consumed = state.tokens_consumed
        if self._cache is not None and self._cache[0] == consumed:
            return self._cache[1]
        left = self.budget - consumed
        chosen = None
        if self._closing and state.can_end():
            chosen = state.grammar.eos_token_ids[0]  # no budget for anything more: end here
        elif left > 0 and (self._path or consumed >= self._next_check) and not state.can_end():
            path = self._path or closing_path(state, self.order, limit=min(left, self.longest) + 1)
            if path and len(path) + self.margin >= left:
                chosen, self._path, self._closing = path[0], path, True
            elif path:
                self._path = path
                slack = left - len(path) - self.margin
                self._next_check = consumed + max(1, slack // (1 + self.growth))
        self._cache = (consumed, chosen)
        return chosen

    def advanced(self, token_id: int) -> None:
        """The row took ``token_id``: the rest of a followed path stays valid only if it was the path's."""
        self._path = self._path[1:] if self._path and self._path[0] == token_id else []

    def fork(self) -> BudgetCloser:
        twin = BudgetCloser(self.order, self.budget, margin=self.margin, growth=self.growth, longest=self.longest)
        twin._cache, twin._next_check, twin._path = self._cache, self._next_check, list(self._path)
        twin._closing = self._closing
        return twin


def closing_path(state: GrammarState, order: np.ndarray, *, limit: int) -> list[int]:
    """The greedy closing path from ``state`` (tokens until the grammar accepts), at most ``limit``
    tokens; [] when it accepts already or no path was found within ``limit``."""
    if state.can_end():
        return []
    probe = state.fork()
    path: list[int] = []
    eos = set(state.grammar.eos_token_ids)
    while len(path) < limit:
        forced = probe.forced_tokens()  # text the grammar forces, in one engine call (no mask per token)
        if forced:
            probe.advance_many(forced)
            path += forced
            if probe.can_end():
                return path if len(path) <= limit else []
            continue
        candidates = order[probe.allowed().numpy()[order]]
        token = next((int(t) for t in candidates[:8] if int(t) not in eos), None)
        if token is None:
            return []
        probe.advance(token)
        path.append(token)
        if probe.can_end():
            return path
    return []
