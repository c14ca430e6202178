"""The policy-backend seam: what the GGRO decoder asks of the policy, and nothing more.

The decoder never touches a model or a KV cache. For each generation it opens a
``PolicySession`` on a prompt and asks it to

- ``start()``: read the prompt, and give the next-token distribution after it;
- ``decode(committed, start, first_tokens)``: decode one segment per row, every
  row continuing ``prompt ⊕ committed`` (``start`` is the distribution there),
  row ``i`` starting with ``first_tokens[i]`` (None: the base rule picks it),
  each row ending at the next trigger or at the end of the response
  (``SegmentRules``).

Everything is phrased in token ids, so a backend is free to keep whatever state
makes this cheap: the in-process transformers backend keeps one KV cache and
forks it for the rows; a serving engine keeps its prefix cache. ``committed``
only ever grows within a session.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Collection, Sequence

import torch

from ..decoding.segments import Segment, SegmentRules

if TYPE_CHECKING:
    from ..constraints import LogitsHooks


@dataclass(frozen=True)
class Sampling:
    """The base decoding rule: greedy at temperature 0, else temperature / top-p sampling with a seed."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


class NextToken(ABC):
    """The policy's next-token distribution at one position (under the call's grammar, if any)."""

    entropy: float
    """Entropy in nats (exact in process; estimated where only the top-N is known)."""
    constrained: bool = False
    """True when a grammar ruled out some tokens here (entropy and top-K are over the allowed ones)."""

    @abstractmethod
    def top_k(self, k: int, exclude: Collection[int] = ()) -> list[int]:
        """The ``k`` most likely token ids, most likely first, skipping ``exclude``."""


@dataclass
class PolicyUsage:
    """Work a session did on the policy; reported in ``GGROResult.stats``."""

    forward_passes: int = 0
    """Forward calls (or requests) on the policy; a batched call counts once."""
    tokens_processed: int = 0
    """Input positions the policy computed, prompt included (batch rows count separately)."""
    prompt_tokens_cached: int = 0
    """Request prompt tokens a serving engine took from its prefix cache (0 in process)."""
    prompt_tokens_reprocessed: int = 0
    """Request prompt tokens a serving engine computed again (its prefix-cache misses; 0 in process)."""
    tokens_generated: int = 0
    """Tokens a serving engine sent back, including those past where a row ended (0 in process)."""
    requests_aborted: int = 0
    """Requests closed before the engine finished them (their result was no longer needed)."""


class PolicySession(ABC):
    """One generation's view of the policy; created by ``PolicyBackend.open``."""

    usage: PolicyUsage

    @abstractmethod
    def start(self, hooks: LogitsHooks | None = None) -> NextToken:
        """Read the prompt; the next-token distribution after it (``hooks`` applied)."""

    @abstractmethod
    def decode(
        self,
        committed: Sequence[int],
        start: NextToken,
        first_tokens: Sequence[int | None],
        *,
        min_tokens: int | None = None,
        max_tokens: int | None = None,
        hooks: LogitsHooks | None = None,
    ) -> list[Segment]:
        """One segment per entry of ``first_tokens``, each continuing ``prompt ⊕ committed``.

        ``min_tokens`` overrides the fewest tokens before a trigger may end a row
        (0 lets a row end before its first token); ``max_tokens`` pauses a row
        after that many tokens (``Segment.paused``, with ``end`` set) so the
        caller can release text as it is decoded. ``hooks`` is the grammar and
        logits-processor state at ``prompt ⊕ committed``: each row decodes under
        its own fork of it (the caller's copy is not advanced), entropy, the
        top-K and the base rule see only allowed tokens, and a position where
        the grammar allows a single token is never a trigger.
        """

    def close(self) -> None:
        """Release what the session holds (caches, connections). Idempotent."""


class PolicyBackend(ABC):
    """Where the policy runs: in process, or on a serving engine."""

    tokenizer: Any
    """The policy's tokenizer (always local: chat templates, stops and rewards read its ids)."""
    supports_constraints: bool = True
    """Whether calls may carry a grammar (tools, structured output) or logits processors."""
    concurrent_sessions: bool = False
    """Whether concurrent generations run concurrently here (a serving engine batches them); in process
    they share one model, so front doors decode a batch's prompts one after another."""

    @property
    @abstractmethod
    def name(self) -> str:
        """How traces name the policy."""

    @property
    @abstractmethod
    def eos_ids(self) -> set[int]:
        """Token ids that end a response."""

    @property
    @abstractmethod
    def context_window(self) -> int | None:
        """Most positions the policy reads (prompt plus response), when known."""

    @property
    def device(self) -> torch.device:
        """Where reward models named per call should live to sit next to the policy (CPU for remote policies)."""
        return torch.device("cpu")

    @abstractmethod
    def open(self, prompt_ids: Sequence[int], rules: SegmentRules, sampling: Sampling) -> PolicySession:
        """A session decoding responses to ``prompt_ids`` under ``rules`` with the base rule ``sampling``."""

    def describe(self) -> dict[str, Any]:
        """JSON-safe facts about the backend for traces and results."""
        return {"backend": type(self).__name__, "policy": self.name}
