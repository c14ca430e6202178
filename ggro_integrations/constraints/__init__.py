"""Constrained decoding: grammars, JSON schemas and tool calls as a per-row token mask.

Framework-free (torch, transformers, and the grammar engine llguidance, imported on first use:
``pip install 'ggro-integrations[tools]'``). The decoder drives one :class:`LogitsHooks` per row;
see ``docs/tools-and-structured-output.md`` for the per-step contract and the measurements
behind the engine choice.
"""

from .grammar import SUPPORTED_FORMATS, Grammar, GrammarState
from .hooks import LogitsHooks, allowed_top_k, masked_entropy
from .schema import strict_objects
from .tools import HERMES, ToolCallFormat, ToolSpec, normalize_tool_choice, tool_call_grammar, tool_specs

__all__ = [
    "HERMES",
    "SUPPORTED_FORMATS",
    "Grammar",
    "GrammarState",
    "LogitsHooks",
    "ToolCallFormat",
    "ToolSpec",
    "allowed_top_k",
    "masked_entropy",
    "normalize_tool_choice",
    "strict_objects",
    "tool_call_grammar",
    "tool_specs",
]
