"""Errors talking to a serving engine: each says what happened, where, and what to change.

They subclass :class:`~ggro_integrations.errors.GGROError` and the built-in a caller
would catch (``ConnectionError``, ``TimeoutError``, ``ValueError``), and never carry
request headers (an ``api_key`` stays out of every message).
"""

from __future__ import annotations

from ...errors import GGROError


class ServerError(GGROError, RuntimeError):
    """Base class: the serving engine at ``url`` could not answer a request."""

    def __init__(self, message: str, *, url: str, engine: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.engine = engine
        self.status = status


class ServerUnreachableError(ServerError, ConnectionError):
    """No connection could be made (refused, DNS, connect timeout), after the retries."""


class ServerDisconnectedError(ServerError, ConnectionError):
    """The server closed the connection before the response was complete (crash, restart, kill).

    No partial output is returned: the continuation is unknown past what arrived.
    """


class ServerTimeoutError(ServerError, TimeoutError):
    """The server accepted the request but did not answer within the read timeout."""


class ServerRequestError(ServerError, ValueError):
    """The server rejected the request (HTTP 4xx); the message quotes the server's reason."""


class LogprobsLimitError(ServerRequestError):
    """The server caps top log-probabilities below the N asked for; the message names the flag to raise."""


class ServerInternalError(ServerError):
    """The server kept failing with HTTP 5xx after the retries."""


class IncompleteResponseError(ServerError):
    """The server answered, but the body is truncated or lacks what was asked (e.g. no log-probabilities)."""


class StreamGapError(IncompleteResponseError):
    """A stream skipped a token it cannot send (llama-server: one ending mid-UTF-8 character).

    The positions before the gap were correct; decode the rest with ``complete()``
    (which returns every token) from the prompt plus those positions.
    """


class ServerVocabularyError(ServerError, ValueError):
    """The server's model tokenizes differently from the local tokenizer: token ids would mean different things."""
