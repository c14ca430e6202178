"""``GGROInterventionHandler``: collect (and optionally log) GGRO interventions per model run."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from ..events import INTERVENTION_EVENT_NAME, InterventionEvent

logger = logging.getLogger("ggro_integrations.langchain")


def describe(event: InterventionEvent) -> str:
    """One line for logs: where GGRO intervened, what it chose and the reward it gained."""
    verdict = "accepted" if event.accepted else "kept original"
    return (
        f"GGRO trigger #{event.trigger_index} at token {event.position} (entropy {event.entropy:.2f} >= "
        f"{event.threshold:.2f}): {verdict} {event.chosen_token!r} over {event.original_token!r}, "
        f"reward {_fmt(event.base_reward)} -> {_fmt(event.best_reward)} ({event.refinements_used} candidates, "
        f"{event.reward_model or 'reward'})"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


class GGROInterventionHandler(BaseCallbackHandler):
    """Collects every ``ggro_intervention`` custom event, grouped by the model run that produced it.

    Example:
        >>> handler = GGROInterventionHandler(log_level=logging.INFO)                 # doctest: +SKIP
        >>> chain.invoke({"question": q}, config={"callbacks": [handler]})           # doctest: +SKIP
        >>> [e.chosen_token for e in handler.accepted]                               # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        log_level: int | None = None,
        on_intervention: Callable[[InterventionEvent, UUID], None] | None = None,
    ) -> None:
        """``log_level`` logs each event on the ``ggro_integrations.langchain`` logger; ``on_intervention``
        is called with each event and its run id."""
        super().__init__()
        self.log_level = log_level
        self.on_intervention = on_intervention
        self.by_run: dict[UUID, list[InterventionEvent]] = defaultdict(list)
        self._lock = threading.Lock()  # batch() runs several model calls in threads

    def on_custom_event(
        self,
        name: str,
        data: Any,
        *,
        run_id: UUID,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if name != INTERVENTION_EVENT_NAME:
            return
        event = InterventionEvent.from_dict(data)
        with self._lock:
            self.by_run[run_id].append(event)
        if self.log_level is not None:
            logger.log(self.log_level, "%s [run %s]", describe(event), run_id)
        if self.on_intervention is not None:
            self.on_intervention(event, run_id)

    @property
    def events(self) -> list[InterventionEvent]:
        """Every event received, run by run, in order."""
        with self._lock:
            return [e for events in self.by_run.values() for e in events]

    @property
    def accepted(self) -> list[InterventionEvent]:
        """Events where a nudged segment replaced the original one."""
        return [e for e in self.events if e.accepted]

    def summary(self) -> dict[str, Any]:
        """Counts per run, under the keys of ``GGROResult.summary()``: ``triggers``,
        ``interventions_accepted`` (``accepted`` is its deprecated spelling) and ``reward_gain``."""
        with self._lock:
            runs = {run: list(events) for run, events in self.by_run.items()}
        out = {}
        for run, events in runs.items():
            accepted = sum(e.accepted for e in events)
            out[str(run)] = {
                "triggers": len(events),
                "interventions_accepted": accepted,
                "accepted": accepted,
                "reward_gain": sum(e.reward_gain for e in events if e.accepted),
            }
        return out

    def clear(self) -> None:
        with self._lock:
            self.by_run.clear()
