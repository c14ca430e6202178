"""``GGROInterventionEvent``: one GGRO trigger as a LlamaIndex instrumentation event."""

from __future__ import annotations

from typing import Any

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent
from pydantic import Field

from ..events import InterventionEvent

DISPATCHER_NAME = "ggro_integrations.llama_index"
"""Dispatcher that sends GGRO's events (they also propagate to the root dispatcher):
``get_dispatcher(DISPATCHER_NAME).add_event_handler(h)`` subscribes to them alone."""

dispatcher = get_dispatcher(DISPATCHER_NAME)


class GGROInterventionEvent(BaseEvent):
    """What GGRO did at one uncertain position of an LLM call's response.

    ``data`` is the full ``InterventionEvent.to_dict()`` (candidates included);
    the scalar fields repeat its headline numbers so that handlers which only
    record flat attributes (e.g. OpenTelemetry span events) still show them.
    ``span_id`` is the span of the ``GGROLLM`` call that produced it.
    """

    data: dict[str, Any] = Field(description="The core InterventionEvent as a JSON-safe dict.")
    trigger_index: int = Field(description="0-based index of this trigger within the response.")
    position: int = Field(description="Token index of the trigger within the response.")
    entropy: float = Field(description="Entropy (nats) of the policy's next-token distribution at the trigger.")
    threshold: float = Field(description="The entropy threshold in force.")
    accepted: bool = Field(description="True when a nudged segment replaced the unmodified one.")
    original_token: str = Field(description="Token the base rule chose at the trigger.")
    chosen_token: str = Field(description="Token of the accepted segment at the trigger.")
    base_reward: float | None = Field(description="Reward with the unmodified segment.")
    best_reward: float | None = Field(description="Reward with the accepted segment.")
    reward_gain: float = Field(description="best_reward - base_reward (0 when either is unknown).")
    refinements_used: int = Field(description="Nudged candidates decoded and scored at this trigger.")
    stop_reason: str = Field(description="Why refinement ended: 'budget', 'no_positive_gain' or 'disabled'.")
    reward_model: str = Field(description="Name of the reward model that steered this trigger.")

    @classmethod
    def class_name(cls) -> str:
        return "GGROInterventionEvent"

    @classmethod
    def from_intervention(cls, event: InterventionEvent, span_id: str | None) -> GGROInterventionEvent:
        """Wrap a core event, attributed to the span ``span_id``."""
        return cls(
            span_id=span_id,
            data=event.to_dict(),
            trigger_index=event.trigger_index,
            position=event.position,
            entropy=event.entropy,
            threshold=event.threshold,
            accepted=event.accepted,
            original_token=event.original_token,
            chosen_token=event.chosen_token,
            base_reward=event.base_reward,
            best_reward=event.best_reward,
            reward_gain=event.reward_gain,
            refinements_used=event.refinements_used,
            stop_reason=event.stop_reason,
            reward_model=event.reward_model,
        )

    @property
    def intervention(self) -> InterventionEvent:
        """The core ``InterventionEvent`` this wraps."""
        return InterventionEvent.from_dict(self.data)


def dispatch_intervention(event: InterventionEvent, span_id: str | None) -> None:
    """Send ``event`` to every LlamaIndex event handler, attributed to ``span_id``."""
    dispatcher.event(GGROInterventionEvent.from_intervention(event, span_id))
