"""What a generation returns: the text, its reward, every intervention and the work done."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Generator, Iterator, Union

from ..events import InterventionEvent, TextDelta


@dataclass
class GGROStats:
    """Counts of the work one generation did (all strategies report the same fields)."""

    prompt_tokens: int = 0
    """Tokens in the formatted prompt."""
    new_tokens: int = 0
    """Tokens in the returned response."""
    policy_forward_passes: int = 0
    """Forward calls on the policy (a batched call counts once)."""
    policy_tokens_processed: int = 0
    """Policy input positions computed, prompt prefill included (batch rows count separately)."""
    policy_prompt_tokens_cached: int = 0
    """Prompt tokens of the policy's requests a serving engine took from its prefix cache (0 in process)."""
    policy_prompt_tokens_reprocessed: int = 0
    """Prompt tokens of the policy's requests a serving engine computed again (0 in process)."""
    policy_requests_aborted: int = 0
    """Policy requests aborted because their result was no longer needed (server backends)."""
    reward_calls: int = 0
    """Forward calls on the reward model."""
    reward_sequences_scored: int = 0
    """Responses whose reward was computed."""
    reward_tokens_processed: int = 0
    """Reward-model input positions computed (cached prefixes are not counted again)."""
    reward_prompt_tokens_processed: int = 0
    """The part of ``reward_tokens_processed`` spent reading the prompt once."""
    reward_backward_passes: int = 0
    """Gradient computations on the reward model."""
    triggers: int = 0
    """Positions where entropy reached the threshold."""
    interventions_accepted: int = 0
    """Triggers where a nudged segment replaced the unmodified one."""
    seconds: float = 0.0
    """Wall time of the whole generation."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class GGROResult:
    """The outcome of ``GGRODecoder.generate``."""

    text: str
    """The response (prompt not included; stop sequence not included)."""
    token_ids: list[int]
    """Policy token ids of the response (EOS not included)."""
    reward: float | None
    """Reward of the full response under the decoder's reward model (None if none was set)."""
    interventions: list[InterventionEvent]
    """One event per trigger, in order."""
    stats: GGROStats
    """Work counters and timing."""
    finish_reason: str
    """``"eos"``, ``"stop"`` or ``"length"``."""
    strategy: str = "ggro"
    """``"ggro"``, ``"greedy"`` or ``"best_of_n"``."""
    reward_components: dict[str, float] = field(default_factory=dict)
    """Per-component rewards of the response (composite reward models)."""
    samples: list[dict[str, Any]] = field(default_factory=list)
    """Best-of-N only: every sample's text and reward."""
    config: dict[str, Any] = field(default_factory=dict)
    """The effective configuration of this call."""
    reward_model: str = ""
    """Name of the reward model used."""

    @property
    def accepted_interventions(self) -> list[InterventionEvent]:
        return [e for e in self.interventions if e.accepted]

    def summary(self) -> dict[str, Any]:
        """The headline numbers, under the keys every front door reports them with."""
        accepted = self.accepted_interventions
        return {
            "strategy": self.strategy,
            "reward": self.reward,
            "reward_model": self.reward_model,
            "finish_reason": self.finish_reason,
            "triggers": self.stats.triggers,
            "interventions_accepted": len(accepted),
            "reward_gain": sum(e.reward_gain for e in accepted),
            "accepted_at": [e.char_offset for e in accepted],
            "prompt_tokens": self.stats.prompt_tokens,
            "completion_tokens": self.stats.new_tokens,
            "total_tokens": self.stats.prompt_tokens + self.stats.new_tokens,
        }

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["interventions"] = [e.to_dict() for e in self.interventions]
        return data


StreamItem = Union[TextDelta, InterventionEvent]


class GenerationStream:
    """Iterates over committed ``TextDelta`` pieces and ``InterventionEvent`` s in order.

    An event always comes before the text it changed. After the loop,
    ``result`` holds the full ``GGROResult``.
    """

    def __init__(
        self, steps: Generator[StreamItem, None, GGROResult], cancelled: threading.Event | None = None
    ) -> None:
        self._steps = steps
        self._cancelled = cancelled or threading.Event()
        self.result: GGROResult | None = None

    def __iter__(self) -> Iterator[StreamItem]:
        self.result = yield from self._steps

    def close(self) -> None:
        """Stop generating early (frees the generator); call from the thread that iterates."""
        self._steps.close()

    def cancel(self) -> None:
        """Ask the generation to stop at its next decoding step, from any thread.

        The iterating thread then gets ``GenerationCancelled`` (Best-of-N, which
        yields only at the end, stops too).
        """
        self._cancelled.set()
