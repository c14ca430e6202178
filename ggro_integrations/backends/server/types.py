"""What goes to a serving engine and what comes back, independent of the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

FinishReason = Literal["length", "stop"]
"""``"length"``: the request's ``max_tokens`` ran out; ``"stop"``: EOS or a stop token was generated."""


@dataclass(frozen=True)
class TokenLogprob:
    """One candidate token and its log-probability under the full (raw-logit) softmax."""

    token_id: int
    logprob: float


@dataclass(frozen=True)
class Position:
    """One generated position: the chosen token and the N most likely candidates there."""

    token_id: int
    logprob: float
    """The chosen token's log-probability; NaN when the engine reported no distribution here."""
    top: tuple[TokenLogprob, ...]
    """At most N candidates, most likely first (the chosen token need not be among them when sampling).

    Empty when the engine reported no distribution for this position: llama-server
    reports none for a token that ends in the middle of a UTF-8 character.
    """

    @property
    def has_distribution(self) -> bool:
        return bool(self.top)

    @property
    def top_ids(self) -> tuple[int, ...]:
        return tuple(c.token_id for c in self.top)

    @property
    def top_logprobs(self) -> tuple[float, ...]:
        return tuple(c.logprob for c in self.top)


@dataclass(frozen=True)
class CompletionRequest:
    """A continuation of a token-id prompt with top-N log-probabilities at every generated position.

    ``temperature == 0`` is greedy. Sampling parameters not named here are sent
    neutral (no top-k, no min-p, no repetition penalty), so an engine's own defaults
    never change the distribution being decoded.
    """

    prompt: Sequence[int]
    max_tokens: int
    top_logprobs: int = 20
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: Sequence[int] = ()
    """Token ids that end the continuation (included in the output), besides the model's EOS."""
    ignore_eos: bool = False
    cache_prompt: bool = True
    """Reuse the engine's cached KV for a shared prefix (llama-server ``cache_prompt``; vLLM and SGLang always do)."""

    def __post_init__(self) -> None:
        prompt = tuple(int(t) for t in self.prompt)
        if not prompt:
            raise ValueError("CompletionRequest.prompt is empty: give at least one token id.")
        if min(prompt) < 0:
            raise ValueError("CompletionRequest.prompt has a negative token id.")
        object.__setattr__(self, "prompt", prompt)
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if self.max_tokens < 1:
            raise ValueError(f"CompletionRequest.max_tokens={self.max_tokens}; it must be at least 1.")
        if self.top_logprobs < 1:
            raise ValueError(
                f"CompletionRequest.top_logprobs={self.top_logprobs}; the entropy estimate needs at least 1."
            )
        if self.temperature < 0:
            raise ValueError(f"CompletionRequest.temperature={self.temperature}; use 0 for greedy or a positive value.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"CompletionRequest.top_p={self.top_p}; it must be in (0, 1].")


@dataclass(frozen=True)
class CompletionResult:
    """A complete continuation: every position the engine generated, and why it stopped.

    The client only returns one of these when the engine's response was complete;
    a dropped connection or a truncated body raises instead.
    """

    positions: tuple[Position, ...]
    finish_reason: FinishReason
    prompt_tokens: int | None = None
    cached_prompt_tokens: int | None = None
    """Prompt tokens the engine took from its prefix cache instead of recomputing (when it reports it)."""
    engine_timings: dict[str, float] = field(default_factory=dict)

    @property
    def token_ids(self) -> tuple[int, ...]:
        return tuple(p.token_id for p in self.positions)


@dataclass(frozen=True)
class ServerInfo:
    """What :meth:`ServerClient.check` learned about the server at connect time."""

    url: str
    engine: str
    model: str | None
    vocab_size: int | None
    """Rows of the model's output layer, when the engine reports it (llama-server does)."""
    slots: int | None = None
    """Parallel sequences the engine serves at once (llama-server ``-np``), when reported."""
    build: str | None = None
    vocabulary_checked: bool = False
    """True when a probe text tokenized identically on the server and locally."""
    max_top_logprobs_checked: int | None = None
    """The N a one-token probe request succeeded with."""
