"""Tracers that keep GGRO's custom events on their runs, so interventions reach LangSmith.

LangChain's own tracers (``LangChainTracer``, ``RunCollectorCallbackHandler``)
ignore custom events. The subclasses here append each one to the run's
``events`` list (``{"name", "time", "kwargs"}``, LangSmith's run-event shape),
which ``LangChainTracer`` sends with the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from langchain_core.tracers import LangChainTracer
from langchain_core.tracers.run_collector import RunCollectorCallbackHandler
from langchain_core.tracers.schemas import Run

from ..events import INTERVENTION_EVENT_NAME


class CustomEventRecorder:
    """Mixin for ``BaseTracer`` subclasses: record custom events on the run they were sent to."""

    record_event_names: Sequence[str] | None = None
    """Names of custom events to keep; None keeps every custom event."""

    run_map: dict[str, Run]

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
        if self.record_event_names is not None and name not in self.record_event_names:
            return
        run = self.run_map.get(str(run_id))
        if run is None:
            return  # the run was not traced by this tracer (or has already ended)
        run.events.append({"name": name, "time": datetime.now(timezone.utc), "kwargs": data})


class GGROTracer(CustomEventRecorder, LangChainTracer):
    """``LangChainTracer`` that also sends ``ggro_intervention`` events to LangSmith with the model run.

    Example:
        >>> chain.invoke(inputs, config={"callbacks": [GGROTracer(project_name="ggro")]})  # doctest: +SKIP
    """

    record_event_names = (INTERVENTION_EVENT_NAME,)


class GGRORunCollector(CustomEventRecorder, RunCollectorCallbackHandler):
    """Collects finished run trees in memory (``traced_runs``) with ``ggro_intervention`` events attached.

    Useful offline: inspect or print what a LangSmith trace would contain.
    """

    record_event_names = (INTERVENTION_EVENT_NAME,)


def format_run_tree(run: Run, indent: int = 0) -> str:
    """A readable outline of a run tree: each run with its type and its GGRO intervention events."""
    pad = "  " * indent
    lines = [f"{pad}{run.name} [{run.run_type}]"]
    for event in run.events or []:
        if event.get("name") != INTERVENTION_EVENT_NAME:
            continue
        data = event.get("kwargs") or {}
        verdict = "accepted" if data.get("accepted") else "kept"
        lines.append(
            f"{pad}  * {INTERVENTION_EVENT_NAME} #{data.get('trigger_index')} at char {data.get('char_offset')}: "
            f"{data.get('original_token')!r} -> {data.get('chosen_token')!r} ({verdict}; "
            f"entropy {data.get('entropy', 0):.2f}; reward {_fmt(data.get('base_reward'))} -> "
            f"{_fmt(data.get('best_reward'))})"
        )
    for child in sorted(run.child_runs, key=lambda r: r.start_time):
        lines.append(format_run_tree(child, indent + 1))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"
