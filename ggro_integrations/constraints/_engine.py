"""The grammar engine (llguidance), imported on first use, and its per-tokenizer vocabulary.

llguidance is an optional dependency (``pip install 'ggro-integrations[tools]'``): the core
package imports without it, and only building a grammar needs it. Why llguidance and not
xgrammar or outlines-core is measured in ``benchmarks/grammar_engines.py`` and summarised in
``docs/tools-and-structured-output.md``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from types import ModuleType
from typing import Any

from ..errors import ConfigError

INSTALL_HINT = "pip install 'ggro-integrations[tools]'  (or: pip install llguidance)"


@lru_cache(maxsize=1)
def llguidance() -> ModuleType:
    """The ``llguidance`` module, or an ImportError that says how to install it."""
    try:
        import llguidance as llg
        import llguidance.hf  # builds engine vocabularies from Hugging Face tokenizers
    except ImportError as exc:
        raise ImportError(
            f"Constrained decoding (grammars, tool calls, structured output) needs llguidance: {INSTALL_HINT}. "
            f"Importing it failed with: {exc}"
        ) from exc
    return llg


def engine_version() -> str:
    return f"llguidance {llguidance().__version__}"


# The engine's view of a vocabulary costs about a second to build on a 49k vocabulary, so it is
# built once per tokenizer. The key is the Rust backend tokenizer: `copy.copy(tokenizer)` (as
# `with_tool_template` does to swap the chat template) shares it, so a copy reuses the entry.
_TOKENIZERS: OrderedDict[tuple[int, tuple[int, ...]], tuple[Any, Any]] = OrderedDict()
_TOKENIZERS_MAX = 8
_LOCK = threading.Lock()


def eos_ids(tokenizer: Any, eos_token_ids: Sequence[int] | int | None) -> tuple[int, ...]:
    """The token ids that end a constrained output: ``eos_token_ids`` or the tokenizer's EOS."""
    if eos_token_ids is None:
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is None:
            raise ConfigError(
                "eos_token_ids is required: the tokenizer has no eos_token_id, and a grammar must know which "
                "token ends the output. Pass eos_token_ids=[...] (for a chat model, its end-of-turn token)."
            )
        eos_token_ids = [eos]
    elif isinstance(eos_token_ids, int):
        eos_token_ids = [eos_token_ids]
    ids = tuple(int(i) for i in eos_token_ids)
    if not ids:
        raise ConfigError("eos_token_ids must name at least one token id; got an empty list.")
    return ids


def backend_of(tokenizer: Any) -> Any:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(
            f"Constrained decoding needs a fast (Rust-backed) Hugging Face tokenizer; got {type(tokenizer).__name__}. "
            "Load it with AutoTokenizer.from_pretrained(..., use_fast=True)."
        )
    return backend


def engine_tokenizer(tokenizer: Any, eos: tuple[int, ...]) -> tuple[Any, tuple[int, tuple[int, ...]]]:
    """(llguidance tokenizer, cache key) for ``tokenizer`` with end tokens ``eos``; cached."""
    backend = backend_of(tokenizer)
    key = (id(backend), eos)
    with _LOCK:
        hit = _TOKENIZERS.get(key)
        if hit is not None and hit[0] is backend:
            _TOKENIZERS.move_to_end(key)
            return hit[1], key
    llg = llguidance()
    engine_tok = llg.hf.from_tokenizer(tokenizer, eos_token=list(eos))
    with _LOCK:
        # The backend is stored with its entry so its id cannot be reused while the entry lives.
        _TOKENIZERS[key] = (backend, engine_tok)
        _TOKENIZERS.move_to_end(key)
        while len(_TOKENIZERS) > _TOKENIZERS_MAX:
            _TOKENIZERS.popitem(last=False)
    return engine_tok, key


def special_token_ids(tokenizer: Any) -> dict[str, int]:
    """Special added tokens by their text: these are not bytes to the engine, grammars name them by id."""
    out: dict[str, int] = {}
    for idx, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False):
            out[str(added.content)] = int(idx)
    return out
