"""One logits hook per decoded row: a grammar mask and user ``LogitsProcessor``s, composed.

The decoder calls the same four methods whether a row is constrained by a grammar, edited by
transformers ``LogitsProcessor``s passed per call, both, or neither::

    hooks = LogitsHooks(grammar, processors, prompt_ids=prompt)   # once per row
    forced = hooks.forced_token()         # not None: a single allowed token, never a trigger
    scores = hooks(logits)                # [1, vocab] raw -> masked and processed
    ... entropy / top-K / base rule on `scores` (see masked_entropy, allowed_top_k) ...
    hooks.advance(token)                  # the token actually appended
    twin = hooks.fork()                   # a GGRO candidate branching off this row

Near the token budget a ``BudgetCloser`` (``closing.py``), when given, leaves only the token of
the shortest way it finds to close the output (also reported by ``forced_token``).

Order inside ``__call__``: grammar mask, then the processors (so a top-k / top-p warper among
them sees only allowed tokens), then the mask again (a processor that rewrites scores cannot
resurrect a token the grammar forbids; the second pass reuses the cached mask).

A transformers processor is called as ``processor(input_ids, scores)`` with ``input_ids`` the
row's prompt and generated ids (``[1, seq]``, like ``generate`` passes them) and ``scores``
``[1, vocab]``. Processors are shared between forks, so they must be functions of their
arguments (transformers' own are); one that keeps per-sequence state across calls would see
the interleaved calls of every candidate row.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import torch

from ..errors import ConfigError, GrammarError
from .closing import BudgetCloser
from .grammar import Grammar, GrammarState

Processor = Callable[[torch.LongTensor, torch.FloatTensor], torch.FloatTensor]


class LogitsHooks:
    """A row's grammar state (optional) and logits processors (optional) behind one interface."""

    __slots__ = ("_ids", "closer", "processors", "state")

    def __init__(
        self,
        grammar: Grammar | GrammarState | None = None,
        processors: Sequence[Processor] | None = None,
        *,
        prompt_ids: Sequence[int] | torch.Tensor = (),
        closer: BudgetCloser | None = None,
    ) -> None:
        if grammar is not None and not isinstance(grammar, (Grammar, GrammarState)):
            raise ConfigError(
                f"grammar must be a Grammar (or a GrammarState to continue from); got {type(grammar).__name__}."
            )
        self.state: GrammarState | None = grammar.start() if isinstance(grammar, Grammar) else grammar
        self.closer = closer if self.state is not None else None
        """Forces the closing path near the token budget (``closing.py``); None: never."""
        procs = list(processors or ())
        for i, proc in enumerate(procs):
            if not callable(proc):
                raise ConfigError(
                    f"logits_processors[{i}] is a {type(proc).__name__}, not callable: pass transformers "
                    "LogitsProcessor objects or functions (input_ids, scores) -> scores."
                )
        self.processors: tuple[Processor, ...] = tuple(procs)
        if isinstance(prompt_ids, torch.Tensor):
            prompt_ids = prompt_ids.reshape(-1).tolist()
        # Kept only when a processor will read them: the grammar tracks its own state.
        self._ids: list[int] = [int(t) for t in prompt_ids] if self.processors else []

    @property
    def active(self) -> bool:
        """Whether this hook changes anything (a decoder may skip calling an inactive one)."""
        return self.state is not None or bool(self.processors)

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        """Masked and processed scores for the next token (``[vocab]`` or ``[1, vocab]``; same shape back).

        The grammar mask is applied in place; processors may return new tensors.
        """
        if not self.active:
            return scores
        squeeze = scores.dim() == 1
        row = scores.unsqueeze(0) if squeeze else scores
        if row.dim() != 2 or row.shape[0] != 1:
            raise ConfigError(f"LogitsHooks works on one row: scores must be [vocab] or [1, vocab]; got {tuple(scores.shape)}.")
        if self.state is not None:
            self.state.mask_(row)
            closing = self._closing_token()
            if closing is not None:
                keep = row[0, closing].clone()
                row.fill_(float("-inf"))
                row[0, closing] = keep
                return row.squeeze(0) if squeeze else row
        if self.processors:
            input_ids = torch.tensor([self._ids], dtype=torch.long, device=row.device)
            for proc in self.processors:
                out = proc(input_ids, row)
                if not isinstance(out, torch.Tensor) or out.shape != row.shape:
                    raise ConfigError(
                        f"logits processor {proc!r} returned {type(out).__name__} "
                        f"{tuple(getattr(out, 'shape', ()))}; it must return scores shaped {tuple(row.shape)}."
                    )
                row = out
            if self.state is not None:
                self.state.mask_(row)
            # max, not isfinite().any(): a single reduction, 25x cheaper on a 49k row.
            if not bool(row.max() > float("-inf")):
                raise GrammarError(self._nothing_allowed(row.shape[-1]))
        elif self.state.allowed_count() == 0 or (
            row.shape[-1] < self.state.grammar.vocab_size and not bool(self.state.allowed(row.shape[-1]).any())
        ):
            raise GrammarError(self._nothing_allowed(row.shape[-1]))
        return row.squeeze(0) if squeeze else row

    def _nothing_allowed(self, width: int) -> str:
        if self.state is not None and not bool(self.state.allowed(width).any()):
            return (
                f"the grammar allows no token id below {width}, the width of these scores: pass the model's "
                f"logits (the grammar's tokenizer has {self.state.grammar.vocab_size} tokens)."
            )
        return (
            "the logits processors left no allowed token (every score is -inf, or some are NaN); "
            "check the processors passed with logits_processors."
        )

    def forced_token(self) -> int | None:
        """The only token the grammar allows next, or None (also None without a grammar)."""
        if self.state is None:
            return None
        closing = self._closing_token()
        return closing if closing is not None else self.state.forced_token()

    def _closing_token(self) -> int | None:
        return None if self.closer is None or self.state is None else self.closer.token(self.state)

    def advance(self, token_id: int) -> None:
        """Record the token appended to this row (raises GrammarViolationError if the grammar forbids it)."""
        if self.state is not None:
            self.state.advance(token_id)
            if self.closer is not None:
                self.closer.advanced(int(token_id))
        if self.processors:
            self._ids.append(int(token_id))

    def fork(self) -> LogitsHooks:
        """An independent copy for a candidate row branching off here."""
        twin = LogitsHooks.__new__(LogitsHooks)
        twin.state = None if self.state is None else self.state.fork()
        twin.processors = self.processors
        twin.closer = None if self.closer is None else self.closer.fork()
        twin._ids = list(self._ids)
        return twin

    def can_end(self) -> bool:
        """Whether the row may end here (always True without a grammar)."""
        return True if self.state is None else self.state.can_end()

    def is_finished(self) -> bool:
        """Whether the grammar admits nothing but EOS (False without a grammar)."""
        return False if self.state is None else self.state.is_finished()


def masked_entropy(scores: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of ``softmax(scores)`` over the last dim, -inf entries contributing 0.

    ``-(p * log p).sum()`` is NaN as soon as one entry is -inf (0 * -inf); under a grammar mask
    that is every row.
    """
    logp = torch.log_softmax(scores.float(), dim=-1)
    p = logp.exp()
    return -(p * logp.masked_fill(p == 0, 0.0)).sum(-1)


def allowed_top_k(scores: torch.Tensor, k: int, exclude: Collection[int] = ()) -> list[int]:
    """The ``k`` best token ids of a ``[vocab]`` / ``[1, vocab]`` row among finite scores, minus ``exclude``.

    ``topk`` returns -inf entries when fewer than ``k`` tokens are allowed; a nudge drawn from
    them would leave the grammar. This never returns one.
    """
    row = scores.reshape(-1)
    finite = int(torch.isfinite(row).sum())
    take = min(k + len(exclude), finite)
    if take <= 0:
        return []
    order = row.topk(take).indices.tolist()
    return [t for t in order if t not in exclude][:k]
