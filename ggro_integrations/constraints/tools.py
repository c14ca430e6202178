"""Grammars for tool calls in the Hermes / Qwen 2.5 format, for every ``tool_choice``.

The format is what ``ggro_integrations.tools.CHATML_TOOLS_TEMPLATE`` renders and ``parse_tool_calls``
reads back::

    <tool_call>
    {"name": "add", "arguments": {"a": 2, "b": 3}}
    </tool_call>

``tool_choice`` decides the shape of the whole response:

* ``"auto"``: free text, and as soon as the model writes ``<tool_call>`` the grammar takes over:
  the name must be a bound tool's, the arguments valid under its schema; after the call, only
  further calls (if ``parallel_tool_calls``) or the end. Expressed with an engine-native lazy
  lexeme (the free text ends at the *first* ``<tool_call>``), so no decoder-side switching and
  no special case when the tag ends in the middle of a token.
* ``"required"`` / ``"any"``: the response starts with a call; one or more.
* a tool name (or ``{"type": "function", "function": {"name": ...}}``): exactly one call to it.
* ``"none"``: free text that never contains ``<tool_call>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ._engine import special_token_ids
from .grammar import Grammar, _compile, json_options
from .schema import as_schema, call_object_schema, strict_objects


@dataclass(frozen=True)
class ToolCallFormat:
    """How a chat template writes tool calls. The default is Hermes / Qwen 2.5 (:data:`HERMES`)."""

    begin: str = "<tool_call>\n"
    """Text before the call's JSON."""
    end: str = "\n</tool_call>"
    """Text after the call's JSON."""
    separator: str = "\n"
    """Optional text between parallel calls (the package's template writes none, Qwen's a newline)."""
    trigger: str = "<tool_call>"
    """In ``"auto"``, the text that opens a call; a prefix of ``begin``."""
    separators: tuple[str, str] = (", ", ": ")
    """JSON item and key separators: the template renders calls with ``tojson``, which writes these."""

    def __post_init__(self) -> None:
        if not self.trigger or not self.begin.startswith(self.trigger):
            raise ConfigError(
                f"ToolCallFormat.trigger must be a non-empty prefix of begin; got trigger={self.trigger!r}, "
                f"begin={self.begin!r}."
            )


HERMES = ToolCallFormat()


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the grammar sees it: its name and the JSON schema of its arguments."""

    name: str
    parameters: dict[str, Any]


def tool_specs(tools: Sequence[Any]) -> list[ToolSpec]:
    """Tools given as OpenAI tool dicts (``{"type": "function", "function": {...}}``), bare
    function dicts (``{"name", "parameters"}``) or :class:`ToolSpec`; names must be unique."""
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise ConfigError(f"tools must be a list of tool definitions; got {type(tools).__name__}.")
    specs: list[ToolSpec] = []
    for i, tool in enumerate(tools):
        if isinstance(tool, ToolSpec):
            specs.append(tool)
            continue
        fn = tool.get("function") if isinstance(tool, Mapping) and isinstance(tool.get("function"), Mapping) else tool
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"tools[{i}] has no 'name': pass OpenAI tool dicts ({{'type': 'function', 'function': "
                "{'name': ..., 'parameters': {...}}}) or {'name': ..., 'parameters': {...}}."
            )
        params = fn.get("parameters", fn.get("input_schema", {"type": "object", "properties": {}}))
        specs.append(ToolSpec(name, as_schema(params, parameter=f"tools[{i}] ({name!r}) parameters")))
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"tools must have unique names; {duplicates} appear more than once.")
    return specs


def normalize_tool_choice(tool_choice: Any, names: Sequence[str]) -> str:
    """``"auto"``, ``"none"``, ``"required"`` or ``"tool:<name>"`` from the forms LangChain / OpenAI accept."""
    if tool_choice in (None, "auto"):
        return "auto"
    if tool_choice in ("none", False):
        return "none"
    if tool_choice in ("any", "required", True):
        return "required"
    if isinstance(tool_choice, Mapping):
        fn = tool_choice.get("function")
        tool_choice = fn.get("name") if isinstance(fn, Mapping) else tool_choice.get("name")
    if isinstance(tool_choice, str) and tool_choice:
        if tool_choice not in names:
            raise ConfigError(f"tool_choice={tool_choice!r} names no bound tool; bound tools are {sorted(names)}.")
        return "tool:" + tool_choice
    raise ConfigError(
        "tool_choice must be 'auto', 'none', 'any', 'required', a tool name or "
        f"{{'type': 'function', 'function': {{'name': ...}}}}; got {tool_choice!r}."
    )


def tool_call_grammar(
    tools: Sequence[Any],
    tokenizer: Any,
    *,
    tool_choice: Any = "auto",
    parallel_tool_calls: bool = True,
    format: ToolCallFormat = HERMES,
    strict: bool = True,
    eos_token_ids: Sequence[int] | int | None = None,
) -> Grammar:
    """The grammar of a response to a model bound to ``tools`` under ``tool_choice``.

    Each tool's parameter schema is compiled first on its own, so an unsupported keyword is
    reported with the tool's name and the keyword's path inside its parameters.
    ``parallel_tool_calls=False`` allows one call per response. ``strict`` closes argument
    objects that declare properties (no undeclared keys; see ``strict_objects``).
    """
    specs = tool_specs(tools)
    names = [s.name for s in specs]
    choice = normalize_tool_choice(tool_choice, names)
    if not specs and choice != "none":
        raise ConfigError(f"tool_choice={tool_choice!r} needs at least one tool; tools is empty.")
    specials = special_token_ids(tokenizer)
    if choice == "none":
        return _compile(
            "tool_calls",
            _lark_source(_none_rules(format, specials), []),
            tokenizer,
            eos_token_ids,
            description="text without tool calls",
            where="tools",
        )
    chosen = [s for s in specs if choice in ("auto", "required") or choice == "tool:" + s.name]
    subgrammars = []
    for i, spec in enumerate(chosen):
        params = strict_objects(as_schema(spec.parameters)) if strict else as_schema(spec.parameters)
        # Compiling the parameters alone names the tool (and the keyword's path) in any error.
        Grammar.from_json_schema(
            params, tokenizer, separators=format.separators, strict=False, eos_token_ids=eos_token_ids,
            name=f"tool {spec.name!r} parameters",
        )
        call = call_object_schema(spec.name, params)
        call["x-guidance"] = json_options(format.separators, None, lenient=False, schema=params)
        subgrammars.append({"name": f"tool_{i}", "json_schema": call})
    rules = _call_rules(format, specials, len(chosen), choice, parallel_tool_calls)
    mode = "one call to " + chosen[0].name if choice.startswith("tool:") else choice
    return _compile(
        "tool_calls",
        _lark_source(rules, subgrammars),
        tokenizer,
        eos_token_ids,
        description=f"tool calls ({mode}; tools {', '.join(s.name for s in chosen)})",
        where="tools",
    )


def _lark_text(text: str, specials: Mapping[str, int]) -> str:
    """``text`` as a sequence of Lark items: string literals, and ``<[id]>`` for special tokens in it.

    A special token (``<|im_end|>``, or ``<tool_call>`` in tokenizers that make it one) is not a
    byte string to the engine, so a literal could never match it.
    """
    if not text:
        return ""
    present = [s for s in sorted(specials, key=len, reverse=True) if s and s in text]
    parts = re.split("(" + "|".join(map(re.escape, present)) + ")", text) if present else [text]
    items = [f"<[{specials[p]}]>" if p in specials else json.dumps(p, ensure_ascii=False) for p in parts if p]
    return " ".join(items)


def _call_rules(
    fmt: ToolCallFormat, specials: Mapping[str, int], n_tools: int, choice: str, parallel: bool
) -> list[str]:
    json_alts = " | ".join(f"@tool_{i}" for i in range(n_tools))
    end = _lark_text(fmt.end, specials)
    sep = _lark_text(fmt.separator, specials)
    more = f" ({sep}? call)*" if parallel and sep else (" call*" if parallel else "")
    rules = [f"call: {_lark_text(fmt.begin, specials)} ({json_alts}) {end}"]
    if choice != "auto":
        # "required" and a named tool: the response opens with the call, no text first.
        rules.insert(0, "start: call" + (more if choice == "required" else ""))
        return rules
    after_trigger = _lark_text(fmt.begin[len(fmt.trigger) :], specials)
    rules += [
        f"start: TEXT | head first{more}",
        f"first: {after_trigger} ({json_alts}) {end}",
        "TEXT: /(?s:.*)/",
    ]
    if fmt.trigger in specials:
        # Free text cannot contain a special token, so it ends there on its own.
        rules.append(f"head: TEXT {_lark_text(fmt.trigger, specials)}")
    else:
        # A lazy lexeme matches as little as it can: the free text ends at the first trigger.
        rules.append(f"head[lazy]: TEXT {_lark_text(fmt.trigger, specials)}")
    return rules


def _none_rules(fmt: ToolCallFormat, specials: Mapping[str, int]) -> list[str]:
    if fmt.trigger in specials:
        return ["start: TEXT", "TEXT: /(?s:.*)/"]
    trigger = json.dumps(fmt.trigger, ensure_ascii=False)
    return ["start: NO_CALL", f"NO_CALL: /(?s:.*)/ & ~(/(?s:.*)/ {trigger} /(?s:.*)/)"]


def _lark_source(rules: list[str], subgrammars: list[dict[str, Any]]) -> str:
    lark = "\n".join(rules) + "\n"
    if not subgrammars:
        return json.dumps({"grammars": [{"lark_grammar": lark}]})
    return json.dumps({"grammars": [{"name": "tool_calls", "lark_grammar": lark}, *subgrammars]})
