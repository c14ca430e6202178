"""Iterate a blocking ``GenerationStream`` from asyncio without blocking the event loop.

Decoding runs in a worker thread (torch releases the GIL in its kernels); each
item crosses to the loop through a queue, so callers dispatch events and yield
chunks on the loop's own thread, exactly as the synchronous path does on its.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from ..decoding import GenerationStream, GGROResult
from ..decoding.result import StreamItem

_ITEM, _DONE, _ERROR = "item", "done", "error"


class ThreadedStream:
    """``async for item in ThreadedStream(stream)``; afterwards ``.result`` holds the ``GGROResult``."""

    def __init__(self, stream: GenerationStream) -> None:
        self._stream = stream
        self.result: GGROResult | None = None

    def __aiter__(self) -> AsyncIterator[StreamItem]:
        return self._run()

    async def _run(self) -> AsyncGenerator[StreamItem, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def put(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:  # the loop closed while we decoded: nobody is listening
                stop.set()

        def work() -> None:
            items = iter(self._stream)
            try:
                for item in items:
                    if stop.is_set():
                        break
                    put(_ITEM, item)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the loop side
                put(_ERROR, exc)
            else:
                put(_DONE, self._stream.result)
            finally:
                items.close()  # frees the decoder's caches when the consumer stopped early

        # Copy the context so context variables (e.g. LlamaIndex's active span) reach the worker.
        loop.run_in_executor(None, contextvars.copy_context().run, work)
        try:
            while True:
                kind, value = await queue.get()
                if kind == _ITEM:
                    yield value
                elif kind == _ERROR:
                    raise value
                else:
                    self.result = value
                    return
        finally:
            # Stops the worker after its current step when the consumer leaves early (break, cancel).
            stop.set()
