"""The reward-model interface the decoder talks to.

A ``RewardModel`` is stateless and shareable. For each generation the decoder
opens a ``RewardSession`` bound to one prompt and the policy's tokenizer; the
session may cache whatever it likes about the prompt and the response so far
(for example the reward model's KV cache of the conversation prefix).

Everything the decoder asks a session is phrased in *policy* token ids:

- ``score(prefix, continuations)``: rewards of ``prompt ⊕ prefix ⊕ c`` for each
  continuation ``c`` (one batch, no gradient).
- ``gradient_gains(prefix, continuation, candidates)``: first-order predicted
  reward change of replacing ``continuation[0]`` by each candidate, from one
  backward pass: ``(E[v] - E[c]) · ∂r/∂e``.
- ``exact_gains(...)``: the same quantity measured by scoring every swap.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..conversation import Conversation, Prompt, as_conversation
from ..errors import GGROError, RewardModelError

TokenIds = Sequence[int]


@dataclass
class RewardScores:
    """Rewards of a batch of responses."""

    values: torch.Tensor
    """Shape ``[batch]``, float32, on CPU."""
    components: dict[str, torch.Tensor] = field(default_factory=dict)
    """Per-component rewards of composites (each ``[batch]``); empty otherwise."""

    def row(self, i: int) -> tuple[float, dict[str, float]]:
        """Reward and component rewards of row ``i`` as Python floats."""
        return float(self.values[i]), {k: float(v[i]) for k, v in self.components.items()}


@dataclass
class RewardUsage:
    """Work a session did; the decoder reports it in ``GGROResult.stats``."""

    forward_calls: int = 0
    """Batched forward passes (each scoring one or more sequences)."""
    sequences_scored: int = 0
    """Sequences whose reward was computed."""
    tokens_processed: int = 0
    """Reward-model input positions actually computed (cached positions are not counted again)."""
    prompt_tokens_processed: int = 0
    """The part of ``tokens_processed`` spent reading the prompt (its template) into the prefix cache."""
    backward_passes: int = 0
    """Gradient computations."""

    def add(self, other: RewardUsage) -> None:
        self.forward_calls += other.forward_calls
        self.sequences_scored += other.sequences_scored
        self.tokens_processed += other.tokens_processed
        self.prompt_tokens_processed += other.prompt_tokens_processed
        self.backward_passes += other.backward_passes


def check_scores(values: Any, expected: int, who: str, *, what: str = "score per response") -> torch.Tensor:
    """Validate a scorer's output: ``expected`` finite numbers, returned as a float32 CPU tensor."""
    try:
        tensor = torch.as_tensor(values, dtype=torch.float32).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise RewardModelError(f"{who} returned {type(values).__name__}, not numbers: {exc}") from exc
    tensor = tensor.reshape(-1) if tensor.dim() > 1 and tensor.numel() == expected else tensor
    if tensor.dim() != 1 or tensor.shape[0] != expected:
        raise RewardModelError(f"{who} must return one {what}: expected shape [{expected}], got {list(tensor.shape)}.")
    if not torch.isfinite(tensor).all():
        bad = [i for i, v in enumerate(tensor.tolist()) if not math.isfinite(v)]
        plural = what.split()[0] + "s"
        raise RewardModelError(f"{who} returned non-finite {plural} (NaN or inf) for rows {bad}.")
    return tensor


class RewardSession(ABC):
    """Scores continuations of one prompt; created by ``RewardModel.session``."""

    def __init__(self) -> None:
        self.usage = RewardUsage()

    @abstractmethod
    def score(self, prefix: TokenIds, continuations: Sequence[TokenIds]) -> RewardScores:
        """Rewards of ``prompt ⊕ prefix ⊕ c`` for every continuation ``c`` (policy ids)."""

    def gradient_gains(self, prefix: TokenIds, continuation: TokenIds, candidates: TokenIds) -> torch.Tensor:
        """First-order predicted gain of replacing ``continuation[0]`` by each candidate."""
        raise RewardModelError(
            f"{type(self).__name__} cannot compute reward gradients; use nudge_scoring='exact'."
        )

    def score_and_gradient_gains(
        self, prefix: TokenIds, continuation: TokenIds, candidates: TokenIds
    ) -> tuple[RewardScores, torch.Tensor]:
        """``score(prefix, [continuation])`` and ``gradient_gains(...)`` together.

        Sessions whose gradient pass also yields the reward override this to
        save one forward pass per trigger.
        """
        return self.score(prefix, [continuation]), self.gradient_gains(prefix, continuation, candidates)

    def exact_gains(self, prefix: TokenIds, continuation: TokenIds, candidates: TokenIds) -> torch.Tensor:
        """Measured reward change of each swap ``continuation[0] -> v`` (one batch, no gradient)."""
        rest = list(continuation[1:])
        rows = [list(continuation)] + [[int(v)] + rest for v in candidates]
        values = self.score(prefix, rows).values
        return values[1:] - values[0]

    @property
    def supports_gradient(self) -> bool:
        return type(self).gradient_gains is not RewardSession.gradient_gains


class RewardModel(ABC):
    """A scalar reward over (prompt, response) that GGRO can steer with.

    Implement ``session`` (and, for gradient guidance, a session whose
    ``gradient_gains`` works) to plug in your own reward. See
    ``docs/reward-models.md``.
    """

    name: str = "reward"

    @abstractmethod
    def session(self, conversation: Conversation, policy_tokenizer: Any) -> RewardSession:
        """Open a session scoring responses to ``conversation`` written in ``policy_tokenizer`` ids.

        Built-in models that format the conversation with a tokenizer also take the keyword
        ``allow_special_tokens_in_content`` (see ``open_session``); yours may, too.
        """

    def open_session(
        self, conversation: Conversation, policy_tokenizer: Any, *, allow_special_tokens_in_content: bool = False
    ) -> RewardSession:
        """``session(...)`` behind a wrapper that checks every answer (what the decoder calls).

        Every score and gain is checked for count, shape and finiteness, and errors name this
        reward model, so a custom session needs no checks of its own. With
        ``allow_special_tokens_in_content=True`` message text may contain the tokenizer's
        control strings as real special tokens (pre-templated text); it reaches models whose
        ``session`` accepts that keyword, the others read the conversation as they always do.
        """
        kwargs = {}
        if allow_special_tokens_in_content and _accepts_keyword(self.session, "allow_special_tokens_in_content"):
            kwargs["allow_special_tokens_in_content"] = True
        return CheckedSession(self.session(conversation, policy_tokenizer, **kwargs), self.name)

    def check_policy_tokenizer(self, policy_tokenizer: Any) -> None:
        """Raise a clear error if this reward model cannot score responses from that tokenizer."""

    @property
    def supports_gradient(self) -> bool:
        """Whether sessions can compute gradient-based gains."""
        return True

    @property
    def component_names(self) -> list[str]:
        """Names of the components reported with each score (composites)."""
        return []

    def score_texts(self, prompt: Prompt, responses: Sequence[str], policy_tokenizer: Any) -> list[float]:
        """Rewards of plain-text responses to ``prompt`` (tokenized with ``policy_tokenizer``)."""
        session = self.open_session(as_conversation(prompt), policy_tokenizer)
        # Response text is text: a control string in it is characters, not a special token.
        rows = [policy_tokenizer.encode(r, add_special_tokens=False, split_special_tokens=True) for r in responses]
        return session.score([], rows).values.tolist()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _accepts_keyword(function: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class CheckedSession(RewardSession):
    """A session whose every answer is checked: the one the decoder talks to.

    A reward that is NaN or infinite, a gain vector of the wrong length, or a session that
    raises becomes a ``RewardModelError`` naming the reward model, instead of a silently wrong
    steering decision (NaN rewards make every candidate "lose"; a short gain vector silently
    drops candidates).
    """

    def __init__(self, inner: RewardSession, name: str) -> None:
        # No super().__init__(): the usage counters are the inner session's.
        self.inner = inner
        self.name = name

    @property
    def usage(self) -> RewardUsage:  # type: ignore[override]
        return self.inner.usage

    @property
    def supports_gradient(self) -> bool:
        return self.inner.supports_gradient

    def _who(self, method: str) -> str:
        return f"reward model {self.name!r} ({type(self.inner).__name__}.{method})"

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self.inner, method)(*args)
        except (GGROError, MemoryError, torch.OutOfMemoryError):
            raise  # already ours, or not the reward model's fault
        except Exception as exc:
            raise RewardModelError(f"{self._who(method)} raised {type(exc).__name__}: {exc}") from exc

    def _scores(self, scores: Any, expected: int, method: str) -> RewardScores:
        if not isinstance(scores, RewardScores):
            raise RewardModelError(
                f"{self._who(method)} must return RewardScores(values=[one float per response]); "
                f"got {type(scores).__name__}."
            )
        who = self._who(method)
        values = check_scores(scores.values, expected, who)
        components = {
            k: check_scores(v, expected, f"{who}, component {k!r}") for k, v in (scores.components or {}).items()
        }
        return RewardScores(values, components)

    def _gains(self, gains: Any, candidates: TokenIds, method: str) -> torch.Tensor:
        return check_scores(gains, len(candidates), self._who(method), what="gain per candidate")

    def score(self, prefix: TokenIds, continuations: Sequence[TokenIds]) -> RewardScores:
        return self._scores(self._call("score", prefix, continuations), len(continuations), "score")

    def gradient_gains(self, prefix: TokenIds, continuation: TokenIds, candidates: TokenIds) -> torch.Tensor:
        return self._gains(self._call("gradient_gains", prefix, continuation, candidates), candidates, "gradient_gains")

    def exact_gains(self, prefix: TokenIds, continuation: TokenIds, candidates: TokenIds) -> torch.Tensor:
        return self._gains(self._call("exact_gains", prefix, continuation, candidates), candidates, "exact_gains")

    def score_and_gradient_gains(
        self, prefix: TokenIds, continuation: TokenIds, candidates: TokenIds
    ) -> tuple[RewardScores, torch.Tensor]:
        method = "score_and_gradient_gains"
        out = self._call(method, prefix, continuation, candidates)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise RewardModelError(f"{self._who(method)} must return (RewardScores, gains); got {type(out).__name__}.")
        return self._scores(out[0], 1, method), self._gains(out[1], candidates, method)
