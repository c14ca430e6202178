"""Events GGRO reports while decoding: plain, JSON-serialisable dataclasses.

Emitting them is the adapters' job (LangChain custom events, LlamaIndex
instrumentation); the core only produces them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

INTERVENTION_EVENT_NAME = "ggro_intervention"
"""Name under which adapters publish an ``InterventionEvent``."""


@dataclass
class CandidateTrial:
    """One candidate segment evaluated at a trigger."""

    token_id: int
    """Policy token id placed at the trigger position."""
    token: str
    """That token's text."""
    predicted_gain: float | None
    """First-order predicted reward change of the swap (None for the unmodified segment)."""
    reward: float | None
    """Measured reward of the prompt plus the response up to the end of this segment."""
    segment: str
    """Text of the segment this candidate produced."""
    is_original: bool = False
    """True for the unmodified segment the base rule produced."""
    num_tokens: int = 0
    """Policy tokens in this segment."""
    reward_components: dict[str, float] = field(default_factory=dict)
    """Per-component rewards when the reward model is a composite."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class InterventionEvent:
    """What GGRO did at one trigger (an uncertain position in the response).

    Every trigger produces one event, whether or not the nudge was accepted.
    """

    trigger_index: int
    """0-based index of this trigger within the response."""
    position: int
    """Token index of the trigger within the response."""
    char_offset: int
    """Character offset of the trigger within the response text."""
    entropy: float
    """Entropy (nats) of the policy's next-token distribution at the trigger."""
    threshold: float
    """The entropy threshold in force."""
    original_token_id: int
    """Token the base rule chose at the trigger."""
    original_token: str
    """Its text."""
    chosen_token_id: int
    """Token of the accepted segment at the trigger (equals the original when not accepted)."""
    chosen_token: str
    """Its text."""
    base_reward: float | None
    """Reward with the unmodified segment (None when no candidate had to be compared)."""
    best_reward: float | None
    """Reward with the accepted segment."""
    accepted: bool
    """True when a nudged segment replaced the unmodified one."""
    refinements_used: int
    """Number of nudged candidates decoded and scored."""
    seconds: float
    """Wall time spent at this trigger."""
    original_segment: str = ""
    """Text of the unmodified segment."""
    chosen_segment: str = ""
    """Text of the accepted segment."""
    candidates: list[CandidateTrial] = field(default_factory=list)
    """Every segment evaluated here, the unmodified one first."""
    stop_reason: str = ""
    """Why refinement ended: ``"budget"``, ``"no_positive_gain"`` or ``"disabled"``."""
    reward_model: str = ""
    """Name of the reward model that steered this trigger."""
    base_reward_components: dict[str, float] = field(default_factory=dict)
    """Per-component rewards of the unmodified segment (composites only)."""
    best_reward_components: dict[str, float] = field(default_factory=dict)
    """Per-component rewards of the accepted segment (composites only)."""
    constrained: bool = False
    """True when a grammar (a tool call, a schema) was in force here: entropy and candidates are over the allowed tokens."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (only str, int, float, bool, None, lists and dicts)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InterventionEvent:
        """Inverse of ``to_dict``."""
        data = dict(data)
        data["candidates"] = [CandidateTrial(**c) for c in data.get("candidates", [])]
        return cls(**data)

    @property
    def reward_gain(self) -> float:
        """best_reward - base_reward (0 when either is unknown)."""
        if self.base_reward is None or self.best_reward is None:
            return 0.0
        return self.best_reward - self.base_reward


@dataclass
class TextDelta:
    """A piece of committed response text: it will never be replaced."""

    text: str
    """The new text."""
    token_ids: list[int]
    """Tokens committed since the previous delta (text held back for a stop sequence or a split
    character comes out in a later delta, so text and tokens need not align one to one)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
