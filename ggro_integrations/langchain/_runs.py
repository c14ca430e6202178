"""Which LangChain run an intervention event belongs to, and how it gets there.

Every ``ggro_intervention`` event goes to the *model run* (the run LangChain
opens for the model call), through that run's callback handlers:

- Where LangChain hands a hook its run manager (``_generate``, ``_agenerate``,
  ``BaseLLM._stream``, the v3 protocol), that run manager says where.
- ``BaseChatModel.stream``/``astream``, and ``invoke`` when it streams
  internally (``streaming=True``, ``astream_events``, LangGraph's messages
  mode), call ``_stream`` *without* one. For those, the model's public
  ``invoke``/``ainvoke``/``stream``/``astream`` fix the run id up front through
  the documented ``config["run_id"]`` and publish a ``ModelRun`` in a
  ContextVar while LangChain's code runs; ``_stream`` finds it there.
- ``BaseLLM`` passes ``_generate`` only the first prompt's run manager; the
  ``_generate_helper`` overrides publish all of them (``prompt_run``).

``CallbackManagerForLLMRun.on_custom_event`` is an empty stub, so events are
sent through a ``CallbackManager`` with the run's handlers, addressed to its id.
``tests/langchain/test_lc_core_contract.py`` pins each of these langchain-core
behaviours and says what to delete here when one changes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.runnables import RunnableConfig
from langchain_core.utils.uuid import uuid7

from ..events import INTERVENTION_EVENT_NAME, InterventionEvent

SyncEmit = Callable[[InterventionEvent], None]
AsyncEmit = Callable[[InterventionEvent], Awaitable[None]]
T = TypeVar("T")


@dataclass(frozen=True)
class ModelRun:
    """The model run a public call is about to open, known before LangChain opens it."""

    owner: Any
    """The model: its own callbacks, tags and metadata join the config's, as in LangChain."""
    run_id: UUID
    """The id put in ``config["run_id"]``; LangChain opens the model run with it."""
    config: RunnableConfig = field(repr=False)
    """The call's config (its callbacks, tags and metadata)."""
    metadata: dict[str, Any] = field(repr=False)
    """The config's metadata plus the model's ``ls_*`` params, as LangChain gives the model run."""

    def _configure(self, cls: type[Any]) -> Any:
        # The arguments BaseChatModel.stream passes to CallbackManager.configure for the model run.
        c, o = self.config, self.owner
        return cls.configure(
            c.get("callbacks"), o.callbacks, o.verbose, c.get("tags"), o.tags, self.metadata, o.metadata
        )

    @contextmanager
    def active(self) -> Iterator[None]:
        """Publish this run to ``_stream``/``_astream`` for the duration of the block."""
        token = _ACTIVE_RUN.set(self)
        try:
            yield
        finally:
            _ACTIVE_RUN.reset(token)

    def steps(self, items: Iterator[T]) -> Iterator[T]:
        """``items`` with this run active only while LangChain's generator (and so ``_stream``) runs:
        not while the consumer handles a chunk, which may call other models."""
        try:
            while True:
                with self.active():
                    try:
                        item = next(items)
                    except StopIteration:
                        return
                yield item
        finally:
            getattr(items, "close", lambda: None)()

    async def asteps(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """The async twin of ``steps``."""
        try:
            while True:
                with self.active():
                    try:
                        item = await items.__anext__()
                    except StopAsyncIteration:
                        return
                yield item
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()


_ACTIVE_RUN: ContextVar[ModelRun | None] = ContextVar("ggro_model_run", default=None)
_PROMPT_RUNS: ContextVar[list[Any] | None] = ContextVar("ggro_prompt_runs", default=None)


def open_run(
    owner: Any, config: RunnableConfig, stop: list[str] | None, kwargs: dict[str, Any]
) -> tuple[RunnableConfig, ModelRun]:
    """``config`` with its model run id fixed (the caller's ``run_id`` if it set one), and that run."""
    run_id = config.get("run_id") or uuid7()
    config = {**config, "run_id": run_id}
    metadata = {**(config.get("metadata") or {}), **owner._get_ls_params(stop=stop, **kwargs)}
    return config, ModelRun(owner, run_id, dict(config), metadata)  # type: ignore[arg-type]


@contextmanager
def prompt_runs(run_managers: list[Any]) -> Iterator[None]:
    """Publish every prompt's run manager to ``BaseLLM._generate`` (LangChain passes it the first only)."""
    token = _PROMPT_RUNS.set(list(run_managers))
    try:
        yield
    finally:
        _PROMPT_RUNS.reset(token)


def prompt_run(i: int, run_manager: Any) -> Any:
    """The run manager of prompt ``i`` of a ``BaseLLM._generate`` call."""
    runs = _PROMPT_RUNS.get()
    if runs is not None and i < len(runs):
        return runs[i]
    return run_manager if i == 0 else None


def _copy(cls: type[Any], run_manager: Any) -> Any:
    return cls(
        handlers=run_manager.handlers,
        inheritable_handlers=run_manager.inheritable_handlers,
        parent_run_id=run_manager.parent_run_id,
        tags=run_manager.tags,
        inheritable_tags=run_manager.inheritable_tags,
        metadata=run_manager.metadata,
        inheritable_metadata=run_manager.inheritable_metadata,
    )


def _active_run(owner: Any) -> ModelRun | None:
    run = _ACTIVE_RUN.get()
    return run if run is not None and run.owner is owner else None


def sync_emitter(owner: Any, run_manager: Any = None) -> SyncEmit:
    """Sends an event as the ``ggro_intervention`` custom event of the model run: ``run_manager``'s
    if LangChain passed one, else the active ``ModelRun`` of ``owner``."""
    if isinstance(run_manager, CallbackManagerForLLMRun):
        manager, run_id = _copy(CallbackManager, run_manager), run_manager.run_id
    elif (run := _active_run(owner)) is not None:
        manager, run_id = run._configure(CallbackManager), run.run_id
    else:  # legacy BaseChatModel.generate() streaming internally: no run to address (documented)
        return lambda event: None

    def emit(event: InterventionEvent) -> None:
        manager.on_custom_event(INTERVENTION_EVENT_NAME, event.to_dict(), run_id=run_id)

    return emit


def async_emitter(owner: Any, run_manager: Any = None) -> AsyncEmit:
    """The async twin of ``sync_emitter`` (async handlers are awaited on the loop)."""
    if isinstance(run_manager, AsyncCallbackManagerForLLMRun):
        manager, run_id = _copy(AsyncCallbackManager, run_manager), run_manager.run_id
    elif (run := _active_run(owner)) is not None:
        manager, run_id = run._configure(AsyncCallbackManager), run.run_id
    else:

        async def ignore(event: InterventionEvent) -> None:
            return None

        return ignore

    async def emit(event: InterventionEvent) -> None:
        await manager.on_custom_event(INTERVENTION_EVENT_NAME, event.to_dict(), run_id=run_id)

    return emit
