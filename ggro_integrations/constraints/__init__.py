"""Constrained decoding: grammars, JSON schemas and tool calls as a per-row token mask.

Framework-free (torch, transformers, and the grammar engine llguidance, imported on first use:
``pip install 'ggro-integrations[tools]'``). See ``docs/tools-and-structured-output.md`` for the per-step contract and the measurements
behind the engine choice.
"""

from .grammar import SUPPORTED_FORMATS, Grammar, GrammarState
from .schema import strict_objects

__all__ = [
    "SUPPORTED_FORMATS",
    "Grammar",
    "GrammarState",
    "strict_objects",
]
