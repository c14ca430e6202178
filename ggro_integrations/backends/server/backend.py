"""``ServerBackend``: the policy on a serving engine, decoded through streamed requests.

What the decoder asks of a ``PolicySession`` maps onto requests like this:

- ``start()``: a streamed request continuing the prompt; its first position is the
  next-token distribution after the prompt (top-N log-probabilities, entropy from
  the top-N estimator, ``entropy.py``), and the token the engine chose there.
- ``decode(committed, start, first_tokens)``: one streamed request per row, of at most
  ``request_tokens`` new tokens, continuing ``prompt ⊕ committed ⊕ [first token]``
  (the engine's prefix cache makes the shared prefix cheap: it is the fork). Each row
  reads its stream position by position through the same ``SegmentRules`` the
  in-process backend uses, so segments end at the same places; a row whose request
  runs out of tokens before a trigger continues with another request.
- A stream is never read past where a row ended. A base row's stream that ended at a
  trigger or a pause is kept open: it already holds the engine's continuation, which is
  what the next base segment (or the next free-run token) reads. A nudged candidate's
  stream is closed where its segment ends (most candidates lose), and so are streams on
  branches the decoder left behind; closing a stream aborts its request on every engine
  (llama-server, vLLM, SGLang stop at the next token).

Rows of one ``decode`` are concurrent requests read in lockstep from one thread: the
engine batches them. Concurrent generations are concurrent sessions (one per thread,
as the async front doors run them), so the engine batches those too; no lock is held
around anything but the HTTP pool.

llama-server streams no token that ends in the middle of a UTF-8 character
(``StreamGapError``); a cursor then fetches those few tokens with a short non-streamed
request (which returns every token; positions inside a character have no
distribution, so they are never triggers) and streams on after them.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Collection, Sequence

from ...decoding.segments import Segment, SegmentRules
from ...errors import ConfigError
from ..base import NextToken, PolicyBackend, PolicySession, PolicyUsage, Sampling
from .client import CompletionStream, ServerClient
from .entropy import ESTIMATORS, Estimator, TopNEntropy, topn_entropy
from .errors import IncompleteResponseError, ServerDisconnectedError, ServerUnreachableError, StreamGapError
from .types import CompletionRequest, Position, ServerInfo

# A short non-streamed request fetches the tokens llama-server does not stream
# (a UTF-8 character is at most 4 bytes, so at most 3 tokens end inside one).
_GAP_TOKENS = 4
# Streams kept open per session for continuations the decoder may still read.
_MAX_IDLE_CURSORS = 8

NO_CONSTRAINTS = (
    "a grammar (tools, structured output) or logits processors cannot run on the server backend yet: the "
    "decoder applies them to the full logits at every step, and serving engines return only the top-N. "
    "Decode such calls with the in-process backend (build_decoder without server=)."
)

_openers: ThreadPoolExecutor | None = None
_openers_lock = threading.Lock()


def _opener_pool() -> ThreadPoolExecutor:
    """Threads that send several rows' requests at once (waiting for each one's first bytes)."""
    global _openers
    with _openers_lock:
        if _openers is None:
            _openers = ThreadPoolExecutor(max_workers=32, thread_name_prefix="ggro-server-open")
        return _openers


class ServerNextToken(NextToken):
    """The distribution at one position as the engine reported it: top-N, estimated entropy, chosen token."""

    def __init__(self, position: Position, vocab_size: int, estimator: Estimator) -> None:
        self.position = position
        self.chosen = position.token_id
        """The token the engine's base rule picked here (the base segment from here starts with it)."""
        if position.has_distribution:
            self.estimate: TopNEntropy | None = topn_entropy(position.top_logprobs, vocab_size, estimator)
            self.entropy = self.estimate.estimate
        else:
            # llama-server reports no distribution for a token ending mid-UTF-8 character: no
            # entropy is known, and NaN is never >= the threshold, so it is never a trigger.
            self.estimate = None
            self.entropy = math.nan

    def top_k(self, k: int, exclude: Collection[int] = ()) -> list[int]:
        ranked = [t for t in self.position.top_ids if t not in exclude]
        if len(ranked) < k and len(self.position.top) < k + len(exclude):
            raise ConfigError(
                f"the server returned the top {len(self.position.top)} tokens here, too few for nudge_top_k={k} "
                f"(plus {len(exclude)} excluded end-of-sequence ids): build the ServerBackend with "
                f"top_logprobs >= {k + len(exclude)}."
            )
        return ranked[:k]


class _Cursor:
    """The engine's continuation of ``key`` (the prompt plus everything read so far), a position at a time.

    Backed by one streamed request at a time: when a request has generated its
    ``max_tokens``, the next read sends another from where it stopped.
    """

    def __init__(self, session: ServerSession, key: tuple[int, ...]) -> None:
        self.session = session
        self.key = key
        self._context: Any = None
        self._stream: CompletionStream | None = None
        self._iter: Any = None
        self._buffer: list[Position] = []  # positions fetched around a stream gap, not yet read
        self.closed = False

    @property
    def opened(self) -> bool:
        return self._iter is not None or bool(self._buffer)

    def open(self, request: CompletionRequest | None = None) -> _Cursor:
        """Send the request for the continuation of ``key`` (returns once the engine answers)."""
        s = self.session
        request = request or s.request(self.key)
        context = s.backend.client.stream(request)
        self._stream = context.__enter__()
        self._context = context
        self._iter = iter(self._stream)
        s.count_request()
        return self

    def next(self) -> Position:
        """The next position: the distribution at ``key`` and the token the engine chose there."""
        while True:
            if self._buffer:
                position = self._buffer.pop(0)
                break
            if self._iter is None:
                self.open()
            try:
                position = next(self._iter)
                break
            except StopIteration:
                self._request_ended()
            except StreamGapError:
                self._fill_gap()
            except ServerDisconnectedError as dropped:
                self._resume(dropped)
        self.key = self.key + (position.token_id,)
        self.session.resumes = 0  # the bound is on consecutive failures
        return position

    def _request_ended(self) -> None:
        assert self._stream is not None
        finish = self._stream.result().finish_reason
        self._finish(aborted=False)
        if finish == "stop":
            # The engine ended on a token the decoder reads on past (RowRules ends a row at its own EOS ids).
            client = self.session.backend.client
            raise IncompleteResponseError(
                f"the {client.engine} server at {client.base_url} stopped after token {self.key[-1]}, which is "
                f"not among the local end-of-sequence ids {sorted(self.session.backend.eos_ids)}: pass the "
                "served model's end-of-sequence ids as eos_ids=.",
                url=client.base_url,
                engine=client.engine,
            )
        # "length": the request generated its max_tokens; the loop sends the next one.

    def _resume(self, dropped: ServerDisconnectedError) -> None:
        """The connection dropped mid-stream: every position read is final, so continue from them."""
        s = self.session
        self._finish(aborted=True)
        if s.resumes >= s.backend.retry_attempts - 1:
            raise dropped
        s.resumes += 1
        try:
            self.open()
        except ServerUnreachableError as down:
            raise ServerDisconnectedError(
                f"{dropped} Resuming from the {len(self.key) - len(s.prompt_ids)} response tokens read failed: {down}",
                url=down.url,
                engine=down.engine,
            ) from None

    def _fill_gap(self) -> None:
        """Fetch the tokens llama-server did not stream with a short non-streamed request, then stream on."""
        self._finish(aborted=True)
        s = self.session
        result = s.backend.client.complete(s.request(self.key, _GAP_TOKENS))
        s.count_request()
        s.account(result.prompt_tokens, result.cached_prompt_tokens, len(result.positions))
        if not result.positions:
            raise IncompleteResponseError(
                f"the server at {s.backend.client.base_url} returned no tokens after a streaming gap",
                url=s.backend.client.base_url,
                engine=s.backend.client.engine,
            )
        self._buffer.extend(result.positions)  # the key advances as they are read; a new stream opens after

    def _finish(self, *, aborted: bool) -> None:
        """Close the current request (aborting it if it is still generating) and count what it cost."""
        context, stream = self._context, self._stream
        self._context = self._stream = self._iter = None
        if context is None or stream is None:
            return
        prompt, cached = stream.prompt_accounting
        received = stream.received
        # aborted: closed while the engine still had tokens to generate for it
        stops = stream.request.stop_token_ids
        done = stream.finished or received >= stream.request.max_tokens or (bool(self.key) and self.key[-1] in stops)
        early = aborted and not done
        context.__exit__(None, None, None)
        s = self.session
        s.account(prompt, cached, received)
        if early:
            with s.lock:
                s.usage.requests_aborted += 1

    def close(self) -> None:
        """Abort the request (closing its connection stops the engine at its next token)."""
        self._finish(aborted=True)
        self._buffer.clear()
        self.closed = True


class ServerBackend(PolicyBackend):
    """The policy served by llama-server, vLLM or SGLang; the tokenizer (and reward model) stay local.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8080``.
        tokenizer: the served model's tokenizer, loaded locally (its ids are checked against the
            server's at construction when the engine can tokenize).
        engine: ``"llama.cpp"``, ``"vllm"`` or ``"sglang"``.
        top_logprobs: N, the top log-probabilities asked for per position (the entropy estimate and
            the nudge candidates come from them; at least ``nudge_top_k`` plus the EOS ids).
        request_tokens: most new tokens per request; a row without a trigger by then continues with
            another request (from the engine's prefix cache).
        estimator: the top-N entropy estimator (``entropy.topn_entropy``).
        eos_ids: ids that end a response (default: the tokenizer's EOS).
        context_window: the served context per sequence (default: what the engine reports, if it does).
        vocab_size: rows of the model's output layer (default: what the engine reports, else the
            tokenizer's length); the entropy bounds use it.
        check: run ``ServerClient.check`` now (reachability, vocabulary, the logprobs cap).
        client_options: passed to ``ServerClient`` (``model``, ``api_key``, ``timeout``, ``retry``,
            ``max_connections``).
    """

    supports_constraints = False
    concurrent_sessions = True

    def __init__(
        self,
        url: str,
        tokenizer: Any,
        *,
        engine: str = "llama.cpp",
        top_logprobs: int = 20,
        request_tokens: int = 16,
        estimator: Estimator = "zipf",
        eos_ids: Collection[int] | None = None,
        context_window: int | None = None,
        vocab_size: int | None = None,
        check: bool = True,
        name: str | None = None,
        **client_options: Any,
    ) -> None:
        if top_logprobs < 1:
            raise ConfigError(f"top_logprobs={top_logprobs}; the entropy estimate needs at least 1 (20 is typical).")
        if request_tokens < 1:
            raise ConfigError(f"request_tokens={request_tokens}; each request must generate at least 1 token.")
        if estimator not in ESTIMATORS:
            raise ConfigError(f"estimator={estimator!r}; use one of {', '.join(ESTIMATORS)}.")
        self.tokenizer = tokenizer
        self.client = ServerClient(url, engine=engine, **client_options)
        self.top_logprobs = top_logprobs
        self.request_tokens = request_tokens
        self.estimator: Estimator = estimator
        self.retry_attempts = self.client._core.retry.attempts
        ids = eos_ids if eos_ids is not None else [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        self._eos_ids = {int(i) for i in ids}
        self.info: ServerInfo | None = self.client.check(tokenizer, top_logprobs=top_logprobs) if check else None
        reported = self.info.vocab_size if self.info else None
        self.vocab_size = int(vocab_size or reported or len(tokenizer))
        self._context_window = context_window if context_window is not None else self._served_context()
        self._name = name or (self.info.model if self.info and self.info.model else url)

    def _served_context(self) -> int | None:
        if self.client.engine != "llama.cpp" or self.info is None:
            return None
        settings = self.client.get_json("/props").get("default_generation_settings") or {}
        n_ctx = settings.get("n_ctx")
        return int(n_ctx) if isinstance(n_ctx, int) and n_ctx > 0 else None

    @property
    def name(self) -> str:
        return self._name

    @property
    def eos_ids(self) -> set[int]:
        return self._eos_ids

    @property
    def context_window(self) -> int | None:
        return self._context_window

    def open(self, prompt_ids: Sequence[int], rules: SegmentRules, sampling: Sampling) -> ServerSession:
        return ServerSession(self, list(prompt_ids), rules, sampling)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "url": self.client.base_url,
            "engine": self.client.engine,
            "top_logprobs": self.top_logprobs,
            "request_tokens": self.request_tokens,
            "estimator": self.estimator,
        }

    def close(self) -> None:
        self.client.close()


class ServerSession(PolicySession):
    def __init__(self, backend: ServerBackend, prompt_ids: list[int], rules: SegmentRules, sampling: Sampling) -> None:
        if not prompt_ids:
            raise ConfigError("the server backend needs a non-empty prompt (the engine continues token ids).")
        self.backend = backend
        self.usage = PolicyUsage()
        self.prompt_ids = prompt_ids
        self.rules = rules
        self.sampling = sampling
        self.resumes = 0
        self.lock = threading.Lock()  # rows' requests are sent from several threads at once
        self._seeds = itertools.count()
        self._idle: OrderedDict[tuple[int, ...], _Cursor] = OrderedDict()  # open streams by the prefix they continue

    # -- requests and their cost --------------------------------------------------------

    def request(self, key: tuple[int, ...], max_tokens: int | None = None) -> CompletionRequest:
        """The request continuing ``key``: at most ``request_tokens`` new tokens, never past the budget."""
        length = len(key) - len(self.prompt_ids)
        budget = max(1, min(self.backend.request_tokens, self.rules.max_new_tokens - length))
        s = self.sampling
        with self.lock:
            seed = None if s.temperature == 0 else (s.seed * 1_000_003 + next(self._seeds)) % (2**32)
        return CompletionRequest(
            prompt=key,
            max_tokens=min(budget, max_tokens or budget),
            top_logprobs=self.backend.top_logprobs,
            temperature=s.temperature,
            top_p=s.top_p,
            seed=seed,  # one per request, derived from the call's: a seeded call samples reproducibly
            stop_token_ids=sorted(self.backend.eos_ids),
        )

    def count_request(self) -> None:
        with self.lock:
            self.usage.forward_passes += 1

    def account(self, prompt: int | None, cached: int | None, generated: int) -> None:
        with self.lock:
            u = self.usage
            u.tokens_generated += generated
            if prompt is not None:
                reprocessed = prompt - (cached or 0)
                u.prompt_tokens_cached += cached or 0
                u.prompt_tokens_reprocessed += reprocessed
                u.tokens_processed += reprocessed + generated
            else:  # the engine did not say (an aborted vLLM / SGLang stream): the generated tokens only
                u.tokens_processed += generated

    def _cursor(self, key: tuple[int, ...]) -> _Cursor:
        """The continuation of ``key``: a stream kept open from before, else a new one (sent later)."""
        cursor = self._idle.pop(key, None)
        return cursor if cursor is not None else _Cursor(self, key)

    def _keep(self, cursor: _Cursor) -> None:
        """Keep ``cursor`` open: a later base segment or free-run token may continue from it."""
        self._idle[cursor.key] = cursor
        while len(self._idle) > _MAX_IDLE_CURSORS:
            self._idle.popitem(last=False)[1].close()

    def _prune(self, prefix: tuple[int, ...]) -> None:
        """Close the streams on branches that do not continue ``prefix`` (rejected candidates)."""
        n = len(prefix)
        for key in [k for k in self._idle if len(k) <= n or k[:n] != prefix]:
            self._idle.pop(key).close()

    # -- the session API ----------------------------------------------------------------

    def start(self, hooks: Any = None) -> NextToken:
        self._no_hooks(hooks)
        self.rules.check_cancelled()
        cursor = _Cursor(self, tuple(self.prompt_ids))
        try:
            position = cursor.next()
        except BaseException:
            cursor.close()
            raise
        self._keep(cursor)
        return self._next_token(position)

    def decode(
        self,
        committed: Sequence[int],
        start: NextToken,
        first_tokens: Sequence[int | None],
        *,
        min_tokens: int | None = None,
        max_tokens: int | None = None,
        hooks: Any = None,
    ) -> list[Segment]:
        self._no_hooks(hooks)
        if not isinstance(start, ServerNextToken):
            raise TypeError(f"the server backend decodes from its own ServerNextToken, not {type(start).__name__}")
        prefix = tuple(self.prompt_ids) + tuple(committed)
        self._prune(prefix)
        row_rules = self.rules.row(committed, min_tokens=min_tokens, max_tokens=max_tokens)
        segments = [Segment() for _ in first_tokens]
        cursors: dict[int, _Cursor] = {}  # row -> its continuation, while the row goes on
        fresh: set[int] = set()  # rows whose first token is a new draw from `start` (sampling)
        chosen_used = False
        try:
            for i, first in enumerate(first_tokens):
                seg = segments[i]
                if row_rules.ends_before(seg, start.entropy):
                    seg.end = start
                    continue
                if first is None and chosen_used and self.sampling.temperature > 0:
                    # another sample from the same distribution (Best-of-N): a request of its own from here
                    fresh.add(i)
                    cursors[i] = _Cursor(self, prefix)
                    continue
                chosen_used = chosen_used or first is None
                token = int(first) if first is not None else start.chosen
                if row_rules.add(seg, token, start.entropy):
                    cursors[i] = self._cursor(prefix + tuple(seg.tokens))
                elif first is None:
                    # the engine's own choice ended the row (EOS, a stop, the budget): abort its continuation
                    idle = self._idle.pop(prefix + (token,), None)
                    if idle is not None:
                        idle.close()
            self._open_all([c for c in cursors.values() if not c.opened])
            while cursors:
                self.rules.check_cancelled()
                for i in list(cursors):  # lockstep: the engine generates every row's next token at once
                    seg = segments[i]
                    position = cursors[i].next()
                    if i in fresh:  # its first token, drawn where `start` is the distribution
                        fresh.discard(i)
                        if not row_rules.add(seg, position.token_id, start.entropy):
                            cursors.pop(i).close()
                        continue
                    nt = self._next_token(position)
                    if row_rules.ends_before(seg, nt.entropy):
                        seg.end = nt
                        cursor = cursors.pop(i)
                        if first_tokens[i] is None:
                            self._keep(cursor)  # the base continuation: the next segment likely reads it
                        else:
                            cursor.close()  # a nudged candidate usually loses: stop its engine work now
                    elif not row_rules.add(seg, position.token_id, nt.entropy):
                        cursors.pop(i).close()  # EOS, a stop sequence or the budget: abort what it generates on
        except BaseException:
            for cursor in cursors.values():
                cursor.close()
            raise
        return segments

    def _open_all(self, cursors: list[_Cursor]) -> None:
        """Send several rows' requests at once (each waits for the engine's first bytes)."""
        if len(cursors) <= 1:
            for c in cursors:
                c.open()
            return
        requests = [self.request(c.key) for c in cursors]  # here, in row order: seeds follow the rows
        futures = [_opener_pool().submit(c.open, r) for c, r in zip(cursors, requests)]
        failed = next((e for e in (f.exception() for f in futures) if e is not None), None)
        if failed is not None:
            raise failed

    def _next_token(self, position: Position) -> ServerNextToken:
        return ServerNextToken(position, self.backend.vocab_size, self.backend.estimator)

    def _no_hooks(self, hooks: Any) -> None:
        if hooks is not None and getattr(hooks, "active", True):
            raise ConfigError(NO_CONSTRAINTS)

    def close(self) -> None:
        while self._idle:
            self._idle.popitem()[1].close()
