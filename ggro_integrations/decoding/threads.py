"""Iterate a ``GenerationStream`` from asyncio without blocking the event loop.

Decoding is CPU/GPU-bound Python: run on the loop, it would freeze every other
coroutine for the whole generation. ``AsyncGenerationStream`` runs it in a
worker thread of its own (torch releases the GIL in its kernels) and hands each
item to the loop. The worker runs at most ``buffer`` items ahead of the
consumer, so a consumer that simply stops reading — without ``aclose()``, the
ordinary way to stop — costs at most a few more decoding steps; the worker then
stops for good when the stream is closed, cancelled or garbage-collected.
Both adapters (LangChain, LlamaIndex) use this one bridge.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import weakref
from typing import Any

from ..errors import GenerationCancelled
from .result import GenerationStream, GGROResult, StreamItem

_ITEM, _DONE, _ERROR = "item", "done", "error"


def bind_device(device: Any) -> None:
    """Make ``device`` the thread's current CUDA device: a new thread starts on cuda:0, and code that
    allocates on "cuda" without an index would otherwise land there, not next to the policy."""
    if device is not None and getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.set_device(device)


class AsyncGenerationStream:
    """``async for item in AsyncGenerationStream(decoder.stream(call))``; then ``.result``.

    Example:
        >>> stream = AsyncGenerationStream(decoder.stream("Hi"), device=decoder.device)  # doctest: +SKIP
        >>> async for item in stream: ...                                                 # doctest: +SKIP
        >>> result = await AsyncGenerationStream(decoder.stream("Hi")).result_when_done()  # doctest: +SKIP
    """

    def __init__(self, stream: GenerationStream, *, device: Any = None, buffer: int = 4) -> None:
        self._stream = stream
        self._device = device
        self._buffer = buffer
        self._queue: asyncio.Queue[tuple[str, Any]] | None = None
        self._stop = threading.Event()
        self._credits = threading.Semaphore(buffer)
        self._finished = False
        self.result: GGROResult | None = None
        # Dropping the stream unread stops the worker too (it holds no reference back to self).
        self._finalizer = weakref.finalize(self, _halt, self._stop, self._credits, stream)

    def __aiter__(self) -> AsyncGenerationStream:
        return self

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._queue = queue
        worker = threading.Thread(
            target=contextvars.copy_context().run,  # context variables (e.g. LlamaIndex's span) reach the worker
            args=(_work, self._stream, loop, queue, self._stop, self._credits, self._device),
            name="ggro-decode",
            daemon=True,
        )
        worker.start()

    async def __anext__(self) -> StreamItem:
        if self._finished:
            raise StopAsyncIteration
        if self._queue is None:
            self._start()
        assert self._queue is not None
        try:
            kind, value = await self._queue.get()
        except asyncio.CancelledError:
            self._halt()
            raise
        self._credits.release()
        if kind == _ITEM:
            return value
        self._finished = True
        if kind == _ERROR:
            raise value
        self.result = value
        raise StopAsyncIteration

    async def result_when_done(self) -> GGROResult:
        """Drain the stream and return its ``GGROResult``."""
        async for _ in self:
            pass
        assert self.result is not None
        return self.result

    async def aclose(self) -> None:
        """Stop decoding now (the worker stops after its current step and frees the decoder's caches)."""
        self._finished = True
        self._halt()

    def _halt(self) -> None:
        _halt(self._stop, self._credits, self._stream)


def _halt(stop: threading.Event, credits: threading.Semaphore, stream: GenerationStream) -> None:
    stop.set()
    stream.cancel()  # stops a long step too (a trigger's refinement, Best-of-N's whole batch)
    credits.release()  # wakes a worker waiting for the consumer


def _work(
    stream: GenerationStream,
    loop: asyncio.AbstractEventLoop,
    queue: asyncio.Queue[tuple[str, Any]],
    stop: threading.Event,
    credits: threading.Semaphore,
    device: Any,
) -> None:
    def put(kind: str, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop closed while we decoded: nobody is listening
            stop.set()

    items = iter(stream)
    try:
        bind_device(device)
        while True:
            credits.acquire()  # at most `buffer` items ahead of the consumer
            if stop.is_set():
                return
            try:
                item = next(items)
            except StopIteration:
                put(_DONE, stream.result)
                return
            put(_ITEM, item)
    except GenerationCancelled:
        pass  # the consumer asked for it: nobody waits for an error
    except BaseException as exc:  # noqa: BLE001 - re-raised on the loop side
        put(_ERROR, exc)
    finally:
        items.close()  # frees the decoder's caches; a no-op once the stream has ended
