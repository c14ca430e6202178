"""HTTP client for a policy on a serving engine: one request type in, one result type out.

:class:`ServerClient` (sync) and :class:`AsyncServerClient` (asyncio) send a
:class:`CompletionRequest` to llama-server, vLLM or SGLang and return a
:class:`CompletionResult` (per generated position: token id, log-probability and
the top-N candidates; and the finish reason), or stream the positions as they are
generated. Both keep a connection pool, apply timeouts, retry connection failures
and HTTP 5xx with exponential backoff (never 4xx: the request itself is wrong), and
turn failures into errors that name the URL and the fix.

Aborting a request: leaving a ``stream()`` block early (or cancelling the task that
consumes an async stream, or ``complete(cancel=event)``, which streams) closes the
connection, and the engine stops at its next token. Cancelling the task of a
non-streamed ``AsyncServerClient.complete`` closes its connection too, but only
engines that watch the socket while generating stop then: vLLM documents it; the
llama.cpp servers measured here (llama-server b11434, xllamacpp) kept generating.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterator, Sequence

import httpx

from .dialects import Dialect, StreamState, make_dialect
from .errors import (
    IncompleteResponseError,
    ServerDisconnectedError,
    ServerError,
    ServerInternalError,
    ServerRequestError,
    ServerTimeoutError,
    ServerUnreachableError,
    ServerVocabularyError,
)
from .types import CompletionRequest, CompletionResult, Position, ServerInfo

log = logging.getLogger(__name__)

# A probe text for the vocabulary check: words, digits, punctuation, accents and a
# symbol, so a different tokenizer almost surely splits it differently.
PROBE_TEXT = "GGRO probe: Hello, world! 12345 — naïve café, déjà vu; x = y**2 ☃"
# The one-token probe request continues plain ASCII, so its token is a whole character
# (llama-server reports no probabilities for a token that ends mid-character).
PROBE_PROMPT = "The capital of France is"


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff for connection errors and HTTP 5xx.

    ``attempts`` counts the first try; the wait before retry ``k`` (1-based) is
    ``min(max_delay, initial_delay * multiplier**(k-1))``, scaled by a random
    factor in [0.5, 1] so many clients do not retry in lockstep.
    """

    attempts: int = 3
    initial_delay: float = 0.25
    multiplier: float = 2.0
    max_delay: float = 4.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts={self.attempts}; it counts the first try, so use 1 or more.")
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValueError("RetryPolicy delays must be >= 0 and multiplier >= 1.")

    def delay(self, retry: int) -> float:
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (retry - 1))
        return base * random.uniform(0.5, 1.0)


class _Retryable(Exception):
    """Internal: a failure worth another attempt, carrying the error to raise if none is left."""

    def __init__(self, error: ServerError) -> None:
        super().__init__(str(error))
        self.error = error


def _timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    # Generation can take long; connecting should not. A read timeout is the wait for
    # the next bytes, so a streamed request only needs it per token.
    read = 300.0 if timeout is None else float(timeout)
    return httpx.Timeout(connect=min(10.0, read), read=read, write=min(30.0, read), pool=read)


class _Core:
    """The IO-free part shared by the sync and async clients."""

    def __init__(
        self,
        base_url: str,
        engine: str,
        model: str | None,
        api_key: str | None,
        retry: RetryPolicy | None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url={base_url!r}: give the server's URL with its scheme, e.g. http://127.0.0.1:8080")
        self.base_url = base_url.rstrip("/")
        # vLLM and SGLang's OpenAI routes live under /v1; accept a URL given either way.
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[: -len("/v1")]
        self.dialect: Dialect = make_dialect(engine, model)
        self.retry = retry or RetryPolicy()
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    @property
    def engine(self) -> str:
        return self.dialect.engine

    def url(self, path: str) -> str:
        return self.base_url + path

    # -- errors ------------------------------------------------------------------
    def transport_error(self, exc: Exception, path: str, *, after_bytes: bool) -> ServerError | _Retryable:
        url = self.url(path)
        kw = {"url": url, "engine": self.engine}
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            return _Retryable(
                ServerUnreachableError(
                    f"cannot connect to the {self.engine} server at {url} ({exc.__class__.__name__}: {exc}) "
                    f"after {self.retry.attempts} attempt(s): start the server, or fix the URL / port.",
                    **kw,
                )
            )
        if isinstance(exc, httpx.PoolTimeout):
            return ServerTimeoutError(
                f"no free connection to {url} within the pool timeout: every pooled connection is busy; "
                "raise max_connections or the timeout.",
                **kw,
            )
        if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout)):
            return ServerTimeoutError(
                f"the {self.engine} server at {url} did not answer within the {exc.__class__.__name__[:-7].lower()} "
                "timeout: it is overloaded or the request is too long; raise timeout= (seconds) or ask for fewer tokens.",
                **kw,
            )
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            error = ServerDisconnectedError(
                f"the {self.engine} server at {url} closed the connection before the response was complete "
                f"({exc.__class__.__name__}: {exc}); it may have crashed or been restarted. "
                "No partial output was returned.",
                **kw,
            )
            # Nothing was delivered yet: the request can be sent again as it was.
            return error if after_bytes else _Retryable(error)
        return ServerError(f"request to {url} failed: {exc.__class__.__name__}: {exc}", **kw)

    def status_error(self, status: int, text: str, path: str, request: CompletionRequest | None) -> ServerError | _Retryable:
        url = self.url(path)
        message = self.dialect.error_message(text)
        kw = {"url": url, "engine": self.engine, "status": status}
        if status >= 500:
            return _Retryable(
                ServerInternalError(
                    f"the {self.engine} server at {url} failed with HTTP {status} after "
                    f"{self.retry.attempts} attempt(s): {message}",
                    **kw,
                )
            )
        if status in (401, 403):
            return ServerRequestError(
                f"the {self.engine} server at {url} refused the credentials (HTTP {status}): {message}. "
                "Pass the server's key as api_key=... (vLLM --api-key, llama-server --api-key).",
                **kw,
            )
        if status == 404:
            return ServerRequestError(
                f"the server at {url} has no such endpoint (HTTP 404): {message}. Is it a {self.engine} server? "
                f"Set engine= to the one it is ({', '.join(('llama.cpp', 'vllm', 'sglang'))}) and check the URL.",
                **kw,
            )
        return self.dialect.request_error(status, message, request, url)

    def decode_json(self, text: str, path: str) -> dict[str, Any]:
        try:
            body = json.loads(text)
        except ValueError:
            raise IncompleteResponseError(
                f"the {self.engine} server at {self.url(path)} sent a body that is not JSON "
                f"({len(text)} characters; truncated?): {text[:200]!r}",
                url=self.url(path),
                engine=self.engine,
            ) from None
        if not isinstance(body, dict):
            raise IncompleteResponseError(
                f"the {self.engine} server at {self.url(path)} sent JSON that is not an object",
                url=self.url(path),
                engine=self.engine,
            )
        return body

    def located(self, error: IncompleteResponseError, path: str) -> IncompleteResponseError:
        if not error.url:
            error.url = self.url(path)
            error.args = (f"{error.args[0]} (from {error.url})",)
        return error

    def parse(self, text: str, request: CompletionRequest) -> CompletionResult:
        path = self.dialect.completion_path
        body = self.decode_json(text, path)
        try:
            result = self.dialect.parse(body, request)
        except IncompleteResponseError as error:
            raise self.located(error, path) from None
        return truncate_at_stop(result, request)

    def final_error(self, history: list[ServerError]) -> ServerError:
        """The error to raise when the retries are spent: the last one, unless the server died mid-request.

        A server killed while answering first drops the connection, then refuses the
        retries; "cannot connect" alone would hide that the request was under way.
        """
        last = history[-1]
        dropped = next((e for e in history if isinstance(e, ServerDisconnectedError)), None)
        if dropped is not None and isinstance(last, ServerUnreachableError):
            return ServerDisconnectedError(
                f"{dropped} The {len(history) - 1} retr{'y' if len(history) == 2 else 'ies'} could not connect "
                "either: the server is down.",
                url=last.url,
                engine=last.engine,
            )
        return last

    # -- stream framing ----------------------------------------------------------
    def sse_data(self, line: str) -> str | None:
        """The payload of an SSE ``data:`` line, or None for other lines (comments, ids)."""
        if not line.startswith("data:"):
            return None
        return line[5:].strip()

    def chunk(self, data: str, request: CompletionRequest, state: StreamState) -> list[Position]:
        path = self.dialect.completion_path
        body = self.decode_json(data, path)
        if "error" in body and not body.get("choices") and not body.get("completion_probabilities"):
            # engines report a failure inside an already-started stream as an error event
            message = self.dialect.error_message(data)
            code = body["error"].get("code") if isinstance(body["error"], dict) else None
            status = code if isinstance(code, int) else 500
            error = self.status_error(status, data, path, request)
            raise (error.error if isinstance(error, _Retryable) else error)
        try:
            return self.dialect.parse_chunk(body, request, state)
        except IncompleteResponseError as error:
            raise self.located(error, path) from None

    def vocabulary_error(self, local: Sequence[int], remote: Sequence[int], path: str) -> ServerVocabularyError:
        first = next((i for i, (a, b) in enumerate(zip(local, remote)) if a != b), min(len(local), len(remote)))
        return ServerVocabularyError(
            f"the {self.engine} server at {self.url(path)} tokenizes differently from the local tokenizer "
            f"(probe {PROBE_TEXT!r}: local {list(local[:12])}..., server {list(remote[:12])}...; first difference "
            f"at token {first}). Token ids would mean different things: serve the same model the local tokenizer "
            "belongs to, or load the tokenizer of the served model.",
            url=self.url(path),
            engine=self.engine,
        )


def truncate_at_stop(result: CompletionResult, request: CompletionRequest) -> CompletionResult:
    """Cut at the first requested stop token (kept), for engines that cannot stop on token ids."""
    if not request.stop_token_ids:
        return result
    stops = set(request.stop_token_ids)
    for i, position in enumerate(result.positions):
        if position.token_id in stops:
            if i + 1 == len(result.positions) and result.finish_reason == "stop":
                return result
            return CompletionResult(
                positions=result.positions[: i + 1],
                finish_reason="stop",
                prompt_tokens=result.prompt_tokens,
                cached_prompt_tokens=result.cached_prompt_tokens,
                engine_timings=result.engine_timings,
            )
    return result


def _local_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


class ServerClient:
    """Synchronous client for llama-server (``engine="llama.cpp"``), vLLM or SGLang.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8080`` (a trailing ``/v1`` is accepted).
        engine: ``"llama.cpp"``, ``"vllm"`` or ``"sglang"``.
        model: the served model's name (vLLM requires it; :meth:`check` fills it in).
        api_key: sent as ``Authorization: Bearer``; never logged or put in errors.
        timeout: seconds to wait for the server's next bytes (default 300), or an ``httpx.Timeout``.
        retry: the retry policy for connection errors and HTTP 5xx.
        max_connections: the pool's size; concurrent requests beyond it wait for a free connection.
    """

    def __init__(
        self,
        base_url: str,
        *,
        engine: str = "llama.cpp",
        model: str | None = None,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = 64,
    ) -> None:
        self._core = _Core(base_url, engine, model, api_key, retry)
        self._http = httpx.Client(
            timeout=_timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers=self._core._headers,
        )

    def __repr__(self) -> str:
        return f"ServerClient({self._core.base_url!r}, engine={self.engine!r})"  # no api_key

    @property
    def engine(self) -> str:
        return self._core.engine

    @property
    def base_url(self) -> str:
        return self._core.base_url

    @property
    def model(self) -> str | None:
        return self._core.dialect.model

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ServerClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------
    def _with_retries(self, attempt: Callable[[], Any]) -> Any:
        policy = self._core.retry
        history: list[ServerError] = []
        for k in range(1, policy.attempts + 1):
            try:
                return attempt()
            except _Retryable as retryable:
                history.append(retryable.error)
                if k == policy.attempts:
                    raise self._core.final_error(history) from None
                wait = policy.delay(k)
                log.debug("retrying %s in %.2fs after: %s", self.base_url, wait, retryable.error)
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 request: CompletionRequest | None = None) -> str:
        def attempt() -> str:
            try:
                response = self._http.request(method, self._core.url(path), json=body)
            except httpx.TransportError as exc:
                error = self._core.transport_error(exc, path, after_bytes=False)
                raise error
            if response.status_code >= 400:
                raise self._core.status_error(response.status_code, response.text, path, request)
            return response.text

        return self._with_retries(attempt)

    def get_json(self, path: str) -> dict[str, Any]:
        """GET ``path`` and decode it (retried like every call)."""
        return self._core.decode_json(self._request("GET", path), path)

    def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._core.decode_json(self._request("POST", path, body), path)

    # -- the API -------------------------------------------------------------------
    def complete(self, request: CompletionRequest, *, cancel: threading.Event | None = None) -> CompletionResult:
        """Generate ``request`` to the end and return every position, or raise.

        With ``cancel``, the request is streamed and aborted (connection closed, so the
        server stops generating) as soon as the event is set; that raises
        :class:`RequestCancelled`.
        """
        if cancel is not None:
            positions: list[Position] = []
            with self.stream(request) as stream:
                for position in stream:
                    positions.append(position)
                    if cancel.is_set():
                        raise RequestCancelled(f"request to {self.base_url} cancelled after {len(positions)} tokens")
            return stream.result()
        path = self._core.dialect.completion_path
        text = self._request("POST", path, self._core.dialect.payload(request, stream=False), request)
        return self._core.parse(text, request)

    @contextmanager
    def stream(self, request: CompletionRequest) -> Iterator["CompletionStream"]:
        """Stream positions as they are generated; leaving the block early aborts the request.

        ``for position in stream`` yields :class:`Position` objects; after the loop,
        ``stream.result()`` is the complete :class:`CompletionResult`. A connection lost
        mid-stream raises :class:`ServerDisconnectedError` (retried only if nothing had
        arrived yet), never a shorter result.
        """
        core = self._core
        path = core.dialect.completion_path
        payload = core.dialect.payload(request, stream=True)

        def open_response() -> httpx.Response:
            try:
                response = self._http.send(
                    self._http.build_request("POST", core.url(path), json=payload), stream=True
                )
            except httpx.TransportError as exc:
                raise core.transport_error(exc, path, after_bytes=False)
            if response.status_code >= 400:
                text = response.read().decode("utf-8", "replace")
                response.close()
                raise core.status_error(response.status_code, text, path, request)
            return response

        response = self._with_retries(open_response)
        stream = CompletionStream(core, request, response)
        try:
            yield stream
        finally:
            response.close()

    def check(self, tokenizer: Any = None, *, top_logprobs: int | None = None) -> ServerInfo:
        """Connect-time checks; returns what the server reports.

        Waits out a model still loading (HTTP 503, retried), learns the model name and
        vocabulary size where the engine reports them, compares a probe text's
        tokenization with ``tokenizer``'s (raises :class:`ServerVocabularyError` on a
        mismatch), and with ``top_logprobs`` sends a one-token request asking for that
        many log-probabilities (raises :class:`LogprobsLimitError` when the server caps
        them lower).
        """
        return _check_sync(self, tokenizer, top_logprobs)


class RequestCancelled(ServerError):
    """The caller cancelled the request; its connection was closed so the server stops."""

    def __init__(self, message: str, *, url: str = "", engine: str = "") -> None:
        super().__init__(message, url=url, engine=engine)


class CompletionStream:
    """Positions of one streamed request, in order (see :meth:`ServerClient.stream`)."""

    def __init__(self, core: _Core, request: CompletionRequest, response: httpx.Response) -> None:
        self._core = core
        self._request = request
        self._response = response
        self._state = StreamState()
        self._positions: list[Position] = []
        self._done = False

    def __iter__(self) -> Iterator[Position]:
        core = self._core
        path = core.dialect.completion_path
        try:
            for line in self._response.iter_lines():
                data = core.sse_data(line)
                if data is None or data == "":
                    continue
                if data == "[DONE]":
                    break
                for position in core.chunk(data, self._request, self._state):
                    self._positions.append(position)
                    self._state.positions = len(self._positions)
                    yield position
                    if position.token_id in self._request.stop_token_ids:
                        self._state.finish_reason = "stop"
                        self._done = True
                        return
        except httpx.TransportError as exc:
            error = core.transport_error(exc, path, after_bytes=True)
            raise (error.error if isinstance(error, _Retryable) else error) from None
        if self._state.finish_reason is None:
            raise ServerDisconnectedError(
                f"the {core.engine} stream from {core.url(path)} ended after {len(self._positions)} tokens without a "
                "finish reason: the server stopped or the connection was cut. No partial output was returned.",
                url=core.url(path),
                engine=core.engine,
            )
        self._done = True

    @property
    def request(self) -> CompletionRequest:
        return self._request

    @property
    def received(self) -> int:
        """Positions delivered so far."""
        return len(self._positions)

    @property
    def finished(self) -> bool:
        """True once the engine's response ended (a finish reason arrived)."""
        return self._done

    @property
    def prompt_accounting(self) -> tuple[int | None, int | None]:
        """``(prompt tokens, of which taken from the prefix cache)`` as far as the engine has said so far
        (llama-server says it in every chunk; vLLM and SGLang only at the end)."""
        return self._state.prompt_tokens, self._state.cached_prompt_tokens

    def result(self) -> CompletionResult:
        if not self._done:
            raise RuntimeError("the stream has not finished: iterate it to the end before calling result().")
        state = self._state
        return CompletionResult(
            positions=tuple(self._positions),
            finish_reason=state.finish_reason or "stop",
            prompt_tokens=state.prompt_tokens,
            cached_prompt_tokens=state.cached_prompt_tokens,
            engine_timings=state.timings or {},
        )


class AsyncServerClient:
    """The asyncio twin of :class:`ServerClient`, for many concurrent requests on one pool.

    Cancelling the task that awaits :meth:`complete` (``task.cancel()``,
    ``asyncio.wait_for`` timing out, a ``TaskGroup`` failing) closes that request's
    connection; a streamed request (:meth:`stream`) is then aborted on every engine, a
    non-streamed one only where the engine watches the socket (not llama.cpp's servers).
    """

    def __init__(
        self,
        base_url: str,
        *,
        engine: str = "llama.cpp",
        model: str | None = None,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = 64,
    ) -> None:
        self._core = _Core(base_url, engine, model, api_key, retry)
        self._http = httpx.AsyncClient(
            timeout=_timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers=self._core._headers,
        )

    def __repr__(self) -> str:
        return f"AsyncServerClient({self._core.base_url!r}, engine={self.engine!r})"

    @property
    def engine(self) -> str:
        return self._core.engine

    @property
    def base_url(self) -> str:
        return self._core.base_url

    @property
    def model(self) -> str | None:
        return self._core.dialect.model

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncServerClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _with_retries(self, attempt: Callable[[], Any]) -> Any:
        policy = self._core.retry
        history: list[ServerError] = []
        for k in range(1, policy.attempts + 1):
            try:
                return await attempt()
            except _Retryable as retryable:
                history.append(retryable.error)
                if k == policy.attempts:
                    raise self._core.final_error(history) from None
                wait = policy.delay(k)
                log.debug("retrying %s in %.2fs after: %s", self.base_url, wait, retryable.error)
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                       request: CompletionRequest | None = None) -> str:
        async def attempt() -> str:
            try:
                response = await self._http.request(method, self._core.url(path), json=body)
            except httpx.TransportError as exc:
                raise self._core.transport_error(exc, path, after_bytes=False)
            if response.status_code >= 400:
                raise self._core.status_error(response.status_code, response.text, path, request)
            return response.text

        return await self._with_retries(attempt)

    async def get_json(self, path: str) -> dict[str, Any]:
        return self._core.decode_json(await self._request("GET", path), path)

    async def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._core.decode_json(await self._request("POST", path, body), path)

    async def complete(self, request: CompletionRequest) -> CompletionResult:
        """Generate ``request`` to the end (cancelling the awaiting task closes its connection)."""
        path = self._core.dialect.completion_path
        text = await self._request("POST", path, self._core.dialect.payload(request, stream=False), request)
        return self._core.parse(text, request)

    @asynccontextmanager
    async def stream(self, request: CompletionRequest) -> AsyncIterator["AsyncCompletionStream"]:
        """``async with client.stream(req) as s: async for position in s: ...``; leaving early aborts."""
        core = self._core
        path = core.dialect.completion_path
        payload = core.dialect.payload(request, stream=True)

        async def open_response() -> httpx.Response:
            try:
                response = await self._http.send(
                    self._http.build_request("POST", core.url(path), json=payload), stream=True
                )
            except httpx.TransportError as exc:
                raise core.transport_error(exc, path, after_bytes=False)
            if response.status_code >= 400:
                text = (await response.aread()).decode("utf-8", "replace")
                await response.aclose()
                raise core.status_error(response.status_code, text, path, request)
            return response

        response = await self._with_retries(open_response)
        stream = AsyncCompletionStream(core, request, response)
        try:
            yield stream
        finally:
            await response.aclose()

    async def check(self, tokenizer: Any = None, *, top_logprobs: int | None = None) -> ServerInfo:
        """See :meth:`ServerClient.check`."""
        return await _check_async(self, tokenizer, top_logprobs)


class AsyncCompletionStream:
    """Positions of one streamed request (see :meth:`AsyncServerClient.stream`)."""

    def __init__(self, core: _Core, request: CompletionRequest, response: httpx.Response) -> None:
        self._sync = CompletionStream(core, request, response)

    async def __aiter__(self) -> AsyncIterator[Position]:
        s = self._sync
        core = s._core
        path = core.dialect.completion_path
        try:
            async for line in s._response.aiter_lines():
                data = core.sse_data(line)
                if data is None or data == "":
                    continue
                if data == "[DONE]":
                    break
                for position in core.chunk(data, s._request, s._state):
                    s._positions.append(position)
                    s._state.positions = len(s._positions)
                    yield position
                    if position.token_id in s._request.stop_token_ids:
                        s._state.finish_reason = "stop"
                        s._done = True
                        return
        except httpx.TransportError as exc:
            error = core.transport_error(exc, path, after_bytes=True)
            raise (error.error if isinstance(error, _Retryable) else error) from None
        if s._state.finish_reason is None:
            raise ServerDisconnectedError(
                f"the {core.engine} stream from {core.url(path)} ended after {len(s._positions)} tokens without a "
                "finish reason: the server stopped or the connection was cut. No partial output was returned.",
                url=core.url(path),
                engine=core.engine,
            )
        s._done = True

    def result(self) -> CompletionResult:
        return self._sync.result()


# -- connect-time checks ------------------------------------------------------------
# Written once as generators that yield (method, path, body) and receive the decoded
# JSON (or the ServerError raised), so the sync and async clients share the logic.


def _check_steps(core: _Core, tokenizer: Any, top_logprobs: int | None):  # type: ignore[no-untyped-def]
    engine = core.engine
    model = core.dialect.model
    vocab_size = slots = build = None
    remote_ids: list[int] | None = None
    probe_ids: list[int] = [0]
    if engine == "llama.cpp":
        yield ("GET", "/health", None)
        props = yield ("GET", "/props", None)
        slots = props.get("total_slots")
        build = props.get("build_info")
        models = yield ("GET", "/v1/models", None)
        entry = (models.get("data") or [{}])[0]
        model = model or entry.get("id")
        vocab_size = (entry.get("meta") or {}).get("n_vocab")
        if tokenizer is not None:
            remote = yield ("POST", "/tokenize", {"content": PROBE_TEXT, "add_special": False})
            remote_ids = list(remote.get("tokens") or [])
        if top_logprobs is not None and tokenizer is None:
            remote = yield ("POST", "/tokenize", {"content": PROBE_PROMPT, "add_special": False})
            probe_ids = list(remote.get("tokens") or [])
    elif engine == "vllm":
        models = yield ("GET", "/v1/models", None)
        names = [m.get("id") for m in models.get("data") or []]
        if model is None:
            if len(names) != 1:
                raise ValueError(f"the vLLM server at {core.base_url} serves {names}: pass model= to choose one.")
            model = names[0]
        elif model not in names:
            raise ServerRequestError(
                f"the vLLM server at {core.base_url} does not serve model={model!r}; it serves {names}.",
                url=core.url("/v1/models"), engine=engine,
            )
        core.dialect.model = model
        if tokenizer is not None:
            remote = yield ("POST", "/tokenize", {"model": model, "prompt": PROBE_TEXT, "add_special_tokens": False})
            remote_ids = list(remote.get("tokens") or [])
        if top_logprobs is not None and tokenizer is None:
            remote = yield ("POST", "/tokenize", {"model": model, "prompt": PROBE_PROMPT, "add_special_tokens": False})
            probe_ids = list(remote.get("tokens") or [])
    else:  # sglang
        yield ("GET", "/health", None)
        info = yield ("GET", "/get_model_info", None)
        model = model or info.get("model_path")
        # SGLang has no stable tokenize route across versions: the probe completion
        # below still checks that token-id prompts and log-probabilities work.
    checked = False
    if tokenizer is not None and remote_ids is not None:
        local = _local_ids(tokenizer, PROBE_TEXT)
        if local != remote_ids:
            raise core.vocabulary_error(local, remote_ids, "/tokenize")
        if vocab_size is not None and len(tokenizer) > int(vocab_size):
            raise ServerVocabularyError(
                f"the local tokenizer has {len(tokenizer)} tokens but the model at {core.base_url} only "
                f"{vocab_size}: serve the model this tokenizer belongs to.",
                url=core.base_url, engine=engine,
            )
        checked = True
    probed = None
    if top_logprobs is not None:
        prompt = _local_ids(tokenizer, PROBE_PROMPT) if tokenizer is not None else probe_ids
        request = CompletionRequest(prompt=prompt, max_tokens=1, top_logprobs=top_logprobs)
        result = yield ("COMPLETE", "", request)
        got = len(result.positions[0].top) if result.positions else 0
        expected = min(top_logprobs, int(vocab_size)) if vocab_size else top_logprobs
        if got < expected:
            raise IncompleteResponseError(
                f"the {engine} server at {core.base_url} returned {got} top log-probabilities where "
                f"{expected} were asked for" + (f"; raise its {core.dialect.logprobs_flag}" if core.dialect.logprobs_flag else ""),
                url=core.base_url, engine=engine,
            )
        probed = top_logprobs
    return ServerInfo(
        url=core.base_url, engine=engine, model=model, vocab_size=vocab_size, slots=slots, build=build,
        vocabulary_checked=checked, max_top_logprobs_checked=probed,
    )


def _check_sync(client: ServerClient, tokenizer: Any, top_logprobs: int | None) -> ServerInfo:
    steps = _check_steps(client._core, tokenizer, top_logprobs)
    reply: Any = None
    while True:
        try:
            method, path, body = steps.send(reply)
        except StopIteration as done:
            return done.value
        if method == "COMPLETE":
            reply = client.complete(body)
        elif method == "GET":
            reply = client.get_json(path)
        else:
            reply = client.post_json(path, body)


async def _check_async(client: AsyncServerClient, tokenizer: Any, top_logprobs: int | None) -> ServerInfo:
    steps = _check_steps(client._core, tokenizer, top_logprobs)
    reply: Any = None
    while True:
        try:
            method, path, body = steps.send(reply)
        except StopIteration as done:
            return done.value
        if method == "COMPLETE":
            reply = await client.complete(body)
        elif method == "GET":
            reply = await client.get_json(path)
        else:
            reply = await client.post_json(path, body)
