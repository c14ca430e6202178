"""Deciding whether two tokenizers share one vocabulary (token string -> id)."""

from __future__ import annotations

from typing import Any


def shares_vocabulary(a: Any, b: Any) -> bool:
    """True when every token maps to the same id in both tokenizers.

    Compares the full vocabularies (added tokens included), not probe strings:
    a single permuted id makes the gradient path score the wrong tokens.
    """
    if a is b:
        return True
    if len(a) != len(b):
        return False
    return a.get_vocab() == b.get_vocab()
