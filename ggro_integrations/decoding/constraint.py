"""The grammar a call's response must follow: tool calls (``tools`` + ``tool_choice``) or a schema (``grammar``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from .call import CallOptions


def constraint_for(options: CallOptions, tools: Sequence[dict[str, Any]] | None, tokenizer: Any, eos_ids: set[int]) -> Any:
    """The compiled ``constraints.Grammar`` for these options, or None when nothing constrains the response.

    Tools are always constrained (``tool_choice="auto"`` when unset): the model may answer in text,
    but once it opens a call, the call's name and arguments follow the tools' schemas.
    """
    grammar = options.grammar
    if not tools:
        if options.tool_choice is not None and options.tool_choice not in ("none", "auto"):
            raise ConfigError(f"tool_choice={options.tool_choice!r} needs tools; pass tools= (or bind_tools).")
        if grammar is None:
            return None
        from ..constraints import Grammar

        if isinstance(grammar, Grammar):
            return grammar
        if isinstance(grammar, Mapping):
            return Grammar.from_json_schema(dict(grammar), tokenizer, eos_token_ids=sorted(eos_ids) or None)
        raise ConfigError(
            f"grammar must be a constraints.Grammar or a JSON schema (a dict); got {type(grammar).__name__}."
        )
    if grammar is not None:
        raise ConfigError(
            "pass either tools (their calls are constrained by their schemas) or grammar, not both; for "
            "structured output with tools, use a tool whose parameters are the schema and tool_choice=its name."
        )
    from ..constraints import tool_call_grammar

    return tool_call_grammar(
        tools,
        tokenizer,
        tool_choice=options.tool_choice if options.tool_choice is not None else "auto",
        parallel_tool_calls=bool(options.parallel_tool_calls),
        eos_token_ids=sorted(eos_ids) or None,
    )
