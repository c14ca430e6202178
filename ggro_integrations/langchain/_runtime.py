"""Plumbing shared by GGROLLM and ChatGGRO: custom-event emitters and the thread bridge for async.

Custom events: ``CallbackManagerForLLMRun.on_custom_event`` is an empty stub in
langchain-core, so the events are sent through a ``CallbackManager`` rebuilt
from the run manager's handlers, addressed to the model run's id. Where
LangChain gives ``_stream`` no run manager, the adapters pass the run in the
private kwarg ``RUN_KWARG``: the run manager (when ``invoke`` streams
internally), or a ``StreamTarget`` (``ChatGGRO.stream`` / ``astream`` fix the
run id up front), or, for ``GGROLLM``, one run manager per prompt.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)

from ..events import INTERVENTION_EVENT_NAME, InterventionEvent

SyncEmit = Callable[[InterventionEvent], None]
AsyncEmit = Callable[[InterventionEvent], Awaitable[None]]


@dataclass
class StreamTarget:
    """The model run a ``stream()`` call will open, known before LangChain opens it."""

    run_id: UUID
    """The id ``ChatGGRO.stream`` put in the config; LangChain uses it for the model run."""
    config: dict[str, Any]
    """The call's config (its callbacks, tags and metadata)."""
    owner: Any
    """The model: its own callbacks, tags and metadata join the config's, as in LangChain."""

    def _args(self) -> tuple[Any, ...]:
        c, o = self.config, self.owner
        return (c.get("callbacks"), o.callbacks, o.verbose, c.get("tags"), o.tags, c.get("metadata"), o.metadata)

    def sync_manager(self) -> CallbackManager:
        return CallbackManager.configure(*self._args())

    def async_manager(self) -> AsyncCallbackManager:
        return AsyncCallbackManager.configure(*self._args())


RUN_KWARG = "_ggro_run"
"""Private call kwarg carrying the model run (run manager, ``StreamTarget``, or a list per prompt) to the hooks."""

RunRef = CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | StreamTarget | None


def _copy_manager(cls: type, run_manager: Any) -> Any:
    return cls(
        handlers=run_manager.handlers,
        inheritable_handlers=run_manager.inheritable_handlers,
        parent_run_id=run_manager.parent_run_id,
        tags=run_manager.tags,
        inheritable_tags=run_manager.inheritable_tags,
        metadata=run_manager.metadata,
        inheritable_metadata=run_manager.inheritable_metadata,
    )


def sync_emitter(run: RunRef) -> SyncEmit:
    """A function sending an ``InterventionEvent`` as the ``ggro_intervention`` custom event of the model run."""
    if isinstance(run, AsyncCallbackManagerForLLMRun):
        run = run.get_sync()
    if isinstance(run, CallbackManagerForLLMRun):
        manager, run_id = _copy_manager(CallbackManager, run), run.run_id
    elif isinstance(run, StreamTarget):
        manager, run_id = run.sync_manager(), run.run_id
    else:
        return lambda event: None

    def emit(event: InterventionEvent) -> None:
        manager.on_custom_event(INTERVENTION_EVENT_NAME, event.to_dict(), run_id=run_id)

    return emit


def async_emitter(run: RunRef) -> AsyncEmit:
    """Async counterpart of ``sync_emitter``."""
    if isinstance(run, CallbackManagerForLLMRun):
        sync = sync_emitter(run)

        async def emit_sync(event: InterventionEvent) -> None:
            sync(event)

        return emit_sync
    if isinstance(run, AsyncCallbackManagerForLLMRun):
        manager, run_id = _copy_manager(AsyncCallbackManager, run), run.run_id
    elif isinstance(run, StreamTarget):
        manager, run_id = run.async_manager(), run.run_id
    else:

        async def ignore(event: InterventionEvent) -> None:
            return None

        return ignore

    async def emit(event: InterventionEvent) -> None:
        await manager.on_custom_event(INTERVENTION_EVENT_NAME, event.to_dict(), run_id=run_id)

    return emit


_DONE = object()


def bind_device(device: Any) -> None:
    """Make ``device`` the worker thread's current CUDA device: a new thread starts on cuda:0, and code
    that allocates on "cuda" without an index would otherwise land there, not next to the policy."""
    if device is not None and getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.set_device(device)


async def run_in_thread(fn: Callable[..., Any], *args: Any, device: Any = None, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a worker thread bound to ``device``, awaited without blocking the loop."""

    def call() -> Any:
        bind_device(device)
        return fn(*args, **kwargs)

    return await asyncio.to_thread(call)


async def iterate_in_thread(items: Iterable[Any], device: Any = None) -> AsyncIterator[Any]:
    """Iterate a blocking iterable in a worker thread, handing each item to the event loop as it comes.

    Decoding is CPU/GPU-bound Python; running it on the loop would freeze every
    other coroutine for the whole generation. If the consumer stops early the
    worker stops at the next item and closes the iterable.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()
    cancelled = threading.Event()

    def put(item: Any, error: BaseException | None = None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (item, error))
        except RuntimeError:  # the loop closed while we were decoding: nobody is listening
            cancelled.set()

    def produce() -> None:
        bind_device(device)
        iterator: Iterator[Any] = iter(items)
        try:
            for item in iterator:
                if cancelled.is_set():
                    break
                put(item)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the loop side
            put(_DONE, exc)
            return
        finally:
            if cancelled.is_set():
                getattr(iterator, "close", lambda: None)()  # stops decoding now, not at the budget
        put(_DONE)

    worker = loop.run_in_executor(None, produce)
    try:
        while True:
            item, error = await queue.get()
            if item is _DONE:
                if error is not None:
                    raise error
                break
            yield item
        await worker
    finally:
        cancelled.set()
