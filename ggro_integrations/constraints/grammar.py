"""Grammars compiled for one tokenizer, and the per-row state that masks next-token scores.

A :class:`Grammar` is immutable and shared: compiled once per (tokenizer, grammar text) and
cached. Each decoded row gets its own :class:`GrammarState` from :meth:`Grammar.start`; a GGRO
candidate that branches off a row at a trigger gets :meth:`GrammarState.fork` (a copy of the
parser state, about two microseconds, measured in ``benchmarks/grammar_engines.py``).
"""

from __future__ import annotations

import json
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, GrammarError, GrammarViolationError, UnsupportedSchemaError
from ._engine import engine_tokenizer, engine_version, eos_ids, llguidance
from .schema import as_schema, find_keyword, strict_objects

# Formats llguidance enforces (docs/json_schema.md of llguidance); anything else is an error.
SUPPORTED_FORMATS = ("date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid", "uri")

_GRAMMARS: OrderedDict[tuple[Any, ...], Grammar] = OrderedDict()
_GRAMMARS_MAX = 128
_LOCK = threading.Lock()

_REGEX_META = set("\\.+*?()|[]{}^$#&-~")


def regex_literal(text: str) -> str:
    """``text`` as a Rust-regex pattern matching exactly it (llguidance separators are regexes)."""
    return "".join("\\" + c if c in _REGEX_META else c for c in text)


class Grammar:
    """A constraint compiled for one tokenizer: build with a ``from_*`` constructor, then
    :meth:`start` a state per decoded row.

    Example:
        >>> g = Grammar.from_json_schema({"type": "object", "properties": {"n": {"type": "integer"}}}, tok)  # doctest: +SKIP
        >>> state = g.start(); state.mask_(logits); state.advance(token_id)  # doctest: +SKIP
    """

    def __init__(
        self, *, kind: str, source: str, description: str, vocab_size: int, eos_token_ids: tuple[int, ...], matcher: Any
    ) -> None:
        # Built by _compile; use the from_* constructors.
        self.kind = kind
        """``"json_schema"``, ``"regex"``, ``"lark"``, ``"tool_calls"``."""
        self.source = source
        """The engine's grammar text (llguidance JSON / Lark), for debugging."""
        self.description = description
        self.vocab_size = vocab_size
        """Size of the tokenizer's vocabulary as the engine sees it; masks are padded past it."""
        self.eos_token_ids = eos_token_ids
        """The tokens that end the output; allowed whenever the grammar is satisfied."""
        self._pristine = matcher

    def __repr__(self) -> str:
        return f"Grammar({self.kind}: {self.description})"

    def start(self) -> GrammarState:
        """A fresh state at the beginning of the output."""
        return GrammarState(self, self._pristine.deep_copy())

    # -- constructors ------------------------------------------------------------------------

    @classmethod
    def from_json_schema(
        cls,
        schema: Any,
        tokenizer: Any,
        *,
        separators: tuple[str, str] = (", ", ": "),
        whitespace: str | None = None,
        strict: bool = True,
        unsupported: str = "error",
        eos_token_ids: Sequence[int] | int | None = None,
        name: str = "schema",
    ) -> Grammar:
        """Output exactly one JSON value valid under ``schema`` (a dict, JSON string or pydantic model class).

        ``separators`` are the item and key separators (default ``", "`` / ``": "``, what
        ``json.dumps`` and the chat templates' ``tojson`` write, so the model sees its own
        format). ``whitespace``, a regex such as ``r"[ \\n]{0,8}"``, additionally allows that
        whitespace between tokens (matched once per location, so bounds hold). ``strict`` closes
        objects that declare ``properties`` (see :func:`strict_objects`). ``unsupported="ignore"``
        compiles a schema with keywords the engine cannot enforce by dropping them (with a
        warning); the default raises :class:`UnsupportedSchemaError` naming the keyword.
        """
        if unsupported not in ("error", "ignore"):
            raise ConfigError(f"unsupported must be 'error' or 'ignore'; got {unsupported!r}.")
        if not (isinstance(separators, (tuple, list)) and len(separators) == 2 and all(isinstance(s, str) for s in separators)):
            raise ConfigError(f"separators must be (item_separator, key_separator), two strings; got {separators!r}.")
        body = as_schema(schema, parameter=name)
        if strict:
            strict_objects(body)
        source = llguidance().LLMatcher.grammar_from_json_schema(
            {**body, "x-guidance": json_options(separators, whitespace, lenient=unsupported == "ignore", schema=body)}
        )
        return _compile(
            "json_schema", source, tokenizer, eos_token_ids, description=_describe(body), where=name, schema=body
        )

    @classmethod
    def from_regex(cls, pattern: str, tokenizer: Any, *, eos_token_ids: Sequence[int] | int | None = None) -> Grammar:
        """Output a string matching ``pattern`` entirely (Rust ``regex`` syntax; no lookarounds)."""
        if not isinstance(pattern, str):
            raise ConfigError(f"pattern must be a regex string; got {type(pattern).__name__}.")
        source = llguidance().LLMatcher.grammar_from_regex(pattern)
        return _compile("regex", source, tokenizer, eos_token_ids, description=f"/{pattern}/", where="pattern")

    @classmethod
    def from_lark(cls, grammar: str, tokenizer: Any, *, eos_token_ids: Sequence[int] | int | None = None) -> Grammar:
        """A grammar in llguidance's Lark dialect (``start:`` rule; ``%json {...}`` inlines a schema)."""
        if not isinstance(grammar, str):
            raise ConfigError(f"grammar must be Lark text; got {type(grammar).__name__}.")
        source = llguidance().LLMatcher.grammar_from_lark(grammar)
        return _compile("lark", source, tokenizer, eos_token_ids, description="lark grammar", where="grammar")


def json_options(
    separators: tuple[str, str], whitespace: str | None, *, lenient: bool, schema: dict[str, Any]
) -> dict[str, Any]:
    """llguidance's ``x-guidance`` options; a schema's own ``x-guidance`` keys win."""
    options: dict[str, Any] = {
        "item_separator": regex_literal(separators[0]),
        "key_separator": regex_literal(separators[1]),
        "whitespace_flexible": False,
    }
    if whitespace is not None:
        options["whitespace_pattern"] = whitespace
    if lenient:
        options["lenient"] = True
    own = schema.get("x-guidance")
    if isinstance(own, dict):
        options.update(own)
    return options


def _describe(schema: dict[str, Any]) -> str:
    text = json.dumps(schema, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _compile(
    kind: str,
    source: str,
    tokenizer: Any,
    eos_token_ids: Sequence[int] | int | None,
    *,
    description: str,
    where: str,
    schema: dict[str, Any] | None = None,
) -> Grammar:
    """Validate ``source`` for ``tokenizer`` and build the grammar, or return the cached one."""
    llg = llguidance()
    eos = eos_ids(tokenizer, eos_token_ids)
    engine_tok, tok_key = engine_tokenizer(tokenizer, eos)
    key = (tok_key, kind, source)
    with _LOCK:
        hit = _GRAMMARS.get(key)
        if hit is not None:
            _GRAMMARS.move_to_end(key)
            return hit
    is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(source, engine_tok)
    if is_error:
        raise translate_error(messages[0] if messages else "unknown error", where, schema)
    for message in messages:
        warnings.warn(f"{where}: {message}", stacklevel=3)
    matcher = llg.LLMatcher(engine_tok, source, log_level=0)
    if matcher.is_error():
        raise translate_error(matcher.get_error(), where, schema)
    grammar = Grammar(
        kind=kind,
        source=source,
        description=description,
        vocab_size=engine_tok.vocab_size,
        eos_token_ids=eos,
        matcher=matcher,
    )
    with _LOCK:
        _GRAMMARS[key] = grammar
        while len(_GRAMMARS) > _GRAMMARS_MAX:
            _GRAMMARS.popitem(last=False)
    return grammar


_UNIMPLEMENTED = re.compile(r"Unimplemented keys: (\[[^\]]*\])")
_UNKNOWN_FORMAT = re.compile(r"Unknown format: (\S+)")


def translate_error(message: str, where: str, schema: dict[str, Any] | None) -> GrammarError:
    """The engine's message as an error that names the schema feature, where it is, and the fix."""
    message = " ".join(str(message).split())
    if schema is not None:
        found = _UNIMPLEMENTED.search(message)
        if found:
            try:
                keys = [str(k) for k in json.loads(found.group(1))]
            except ValueError:
                keys = [found.group(1)]
            feature = keys[0] if keys else "?"
            path = find_keyword(schema, feature) or ""
            at = f" at {path}" if path else ""
            others = f" (also unsupported: {', '.join(keys[1:])})" if len(keys) > 1 else ""
            return UnsupportedSchemaError(
                f"{where}: JSON-schema keyword {feature!r}{at} is not supported by constrained decoding "
                f"({engine_version()}){others}. Remove it from the schema, or pass unsupported='ignore' to compile "
                "without it (the output is then not checked against it).",
                feature=feature,
                path=path,
            )
        found = _UNKNOWN_FORMAT.search(message)
        if found:
            fmt = found.group(1).strip("\"'")
            path = find_keyword(schema, "format", fmt) or ""
            at = f" at {path}" if path else ""
            return UnsupportedSchemaError(
                f"{where}: string format {fmt!r}{at} is not supported by constrained decoding ({engine_version()}); "
                f"supported formats: {', '.join(SUPPORTED_FORMATS)}. Use one of them, a 'pattern', or drop the format "
                "(unsupported='ignore' drops it for you).",
                feature="format",
                path=path,
            )
    return GrammarError(f"{where}: cannot be compiled for constrained decoding ({engine_version()}): {message}")


def unpack_bitmask(words: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """(0/1 uint8 per token, number allowed) from a packed int32 bitmask (bit ``i % 32`` of word ``i // 32``)."""
    words = words.view(np.uint32).astype("<u4", copy=False)  # native words; a no-op on little-endian hosts
    if size % 32:
        words[-1] &= np.uint32((1 << (size % 32)) - 1)  # ids past the vocabulary are never allowed
    bits = np.unpackbits(words.view(np.uint8), bitorder="little")[:size]
    return bits, int(np.bitwise_count(words).sum()) if hasattr(np, "bitwise_count") else int(bits.sum())


_NEG_INF_BITS = np.uint32(0xFF800000)  # float32 -inf


def bias_from_bits(bits: np.ndarray) -> torch.Tensor:
    """float32 0 where allowed, -inf elsewhere: adding it masks a row (an add is ~25x cheaper than
    ``masked_fill_`` with a bool mask on a 49k row, measured on this CPU)."""
    return torch.from_numpy(((bits ^ 1).astype(np.uint32) * _NEG_INF_BITS).view(np.float32))


class GrammarState:
    """Where one decoded row is in its grammar: masks scores, advances by tokens, forks.

    Not thread-safe: one state per row. Masks are computed on the CPU (the engine drops the GIL)
    and cached until the next :meth:`advance`.
    """

    __slots__ = ("_bias", "_bits", "_consumed", "_count", "_matcher", "grammar")

    def __init__(self, grammar: Grammar, matcher: Any) -> None:
        self.grammar = grammar
        self._matcher = matcher
        self._bits: np.ndarray | None = None
        self._count = 0
        self._bias: torch.Tensor | None = None
        self._consumed = 0

    @property
    def tokens_consumed(self) -> int:
        """Tokens advanced through since :meth:`Grammar.start` (net of rollbacks)."""
        return self._consumed

    def _engine_bits(self) -> np.ndarray:
        if self._bits is None:
            n = self.grammar.vocab_size
            words = np.zeros((n + 31) // 32, dtype=np.int32)
            self._matcher.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
            if self._matcher.is_error():
                raise GrammarViolationError(f"grammar state is broken: {self._matcher.get_error()}")
            self._bits, self._count = unpack_bitmask(words, n)
        return self._bits

    def allowed(self, vocab_size: int | None = None) -> torch.Tensor:
        """Bool tensor ``[vocab_size]``: True where the next token may be that id.

        ``vocab_size`` is the width of the model's logits (it may exceed the tokenizer's: the
        padding ids are never allowed). Do not modify the returned tensor.
        """
        mask = torch.from_numpy(self._engine_bits().view(np.bool_))
        if vocab_size is None or vocab_size == mask.shape[0]:
            return mask
        if vocab_size > mask.shape[0]:
            return torch.cat([mask, torch.zeros(vocab_size - mask.shape[0], dtype=torch.bool)])
        return mask[:vocab_size]

    def mask_(self, scores: torch.Tensor) -> torch.Tensor:
        """Set disallowed entries of ``scores`` (``[vocab]`` or ``[1, vocab]``, any device) to -inf, in place.

        Scores of +inf are not supported (they would become NaN where disallowed).
        """
        width = scores.shape[-1]
        bias = self._bias
        if bias is None or bias.shape[0] != width or bias.device != scores.device or bias.dtype != scores.dtype:
            bits = self._engine_bits()
            n = bits.shape[0]
            if width > n:
                bits = np.concatenate([bits, np.zeros(width - n, dtype=np.uint8)])
            bias = bias_from_bits(bits[:width]).to(device=scores.device, dtype=scores.dtype, non_blocking=True)
            self._bias = bias
        return scores.add_(bias)

    def allowed_count(self) -> int:
        """How many token ids the grammar allows next."""
        self._engine_bits()
        return self._count

    def forced_token(self) -> int | None:
        """The only token the grammar allows next, or None when there is a choice.

        A step with one allowed token is not a decision: the decoder should take it without
        computing entropy (it is never a GGRO trigger) and without scoring nudges.
        """
        bits = self._engine_bits()
        return int(bits.argmax()) if self._count == 1 else None

    def forced_tokens(self) -> list[int]:
        """Tokens the grammar forces from here (its canonical tokenization of the forced text; may be empty).

        A decoder can append them in one forward pass instead of one per token (jump-forward).
        """
        return [int(t) for t in self._matcher.compute_ff_tokens()]

    def can_end(self) -> bool:
        """Whether the output may end here (the grammar is satisfied; EOS is among the allowed tokens)."""
        return bool(self._matcher.is_accepting())

    def is_finished(self) -> bool:
        """Whether nothing but EOS can follow (or EOS was consumed): the constrained output is complete."""
        return bool(self._matcher.is_stopped())

    def advance(self, token_id: int) -> None:
        """Consume ``token_id``; raises :class:`GrammarViolationError` (state unchanged) if it is not allowed."""
        token_id = int(token_id)
        matcher = self._matcher
        # validate_tokens never changes the state; it says 0 for EOS once the grammar has stopped
        # (only EOS can follow), which consume_token then accepts.
        ok = matcher.validate_tokens([token_id]) == 1 or (
            token_id in self.grammar.eos_token_ids and matcher.is_accepting()
        )
        if not ok or not matcher.consume_token(token_id):
            raise GrammarViolationError(
                f"token {token_id} is not allowed by the grammar at this point ({self.grammar.description}); "
                "choose the next token from the masked scores (GrammarState.mask_ / allowed)."
            )
        self._consumed += 1
        self._bits = self._bias = None

    def advance_many(self, token_ids: Sequence[int]) -> None:
        """Consume several tokens; on a violation the state has consumed the ones before it."""
        for token_id in token_ids:
            self.advance(token_id)

    def fork(self) -> GrammarState:
        """An independent copy (for a candidate row branching off here); the cached mask is shared."""
        twin = GrammarState(self.grammar, self._matcher.deep_copy())
        twin._bits, twin._count, twin._bias = self._bits, self._count, self._bias
        twin._consumed = self._consumed
        return twin

    def rollback(self, n: int) -> None:
        """Undo the last ``n`` tokens (``0 <= n <= tokens_consumed``)."""
        if not 0 <= n <= self._consumed:
            raise ConfigError(f"rollback n must be between 0 and tokens_consumed={self._consumed}; got {n}.")
        if n and not self._matcher.rollback(n):
            raise GrammarError(f"the grammar engine could not roll back {n} tokens: {self._matcher.get_error()}")
        self._consumed -= n
        self._bits = self._bias = None
