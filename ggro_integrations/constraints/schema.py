"""JSON-schema preparation for the grammar engine: input forms, strict objects, locating keywords.

Kept separate from the engine so the rules (what "strict" adds, how a tool's ``$defs`` are
hoisted when its parameters are wrapped in a call object) are plain dict transformations that
can be read and tested on their own.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import ConfigError

# Keywords whose values are schemas (or maps / lists of schemas): where the walkers descend.
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_VALUES = (
    "items",
    "additionalProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "propertyNames",
    "additionalItems",
)


def as_schema(schema: Any, *, parameter: str = "schema") -> dict[str, Any]:
    """A JSON schema dict from a dict, a JSON string, or a pydantic model class (a deep copy)."""
    if hasattr(schema, "model_json_schema"):
        return schema.model_json_schema()
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{parameter} is a string but not valid JSON ({exc}); pass a JSON schema.") from exc
    if schema is True:
        return {}  # any JSON value
    if schema is False:
        raise ConfigError(f"{parameter}=False accepts no value at all, so no output could satisfy it.")
    if not isinstance(schema, Mapping):
        raise ConfigError(
            f"{parameter} must be a JSON schema (a dict or JSON string) or a pydantic model class; "
            f"got {type(schema).__name__}."
        )
    return copy.deepcopy(dict(schema))


def subschemas(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema dict inside ``schema`` (itself first) with its JSON pointer."""
    if not isinstance(schema, dict):
        return
    yield path, schema
    for key in _SCHEMA_MAPS:
        value = schema.get(key)
        if isinstance(value, dict):
            for name, sub in value.items():
                yield from subschemas(sub, f"{path}/{key}/{_escape(name)}")
    for key in _SCHEMA_LISTS:
        value = schema.get(key)
        if isinstance(value, list):
            for i, sub in enumerate(value):
                yield from subschemas(sub, f"{path}/{key}/{i}")
    for key in _SCHEMA_VALUES:
        value = schema.get(key)
        if isinstance(value, dict):
            yield from subschemas(value, f"{path}/{key}")
        elif isinstance(value, list):  # draft-4 tuple form of "items"
            for i, sub in enumerate(value):
                yield from subschemas(sub, f"{path}/{key}/{i}")


def _escape(name: str) -> str:
    return str(name).replace("~", "~0").replace("/", "~1")


def find_keyword(schema: dict[str, Any], keyword: str, value: Any = None) -> str | None:
    """JSON pointer of the first schema using ``keyword`` (with ``value``, if given); None if absent."""
    for path, sub in subschemas(schema):
        if keyword in sub and (value is None or sub[keyword] == value):
            return f"{path}/{_escape(keyword)}"
    return None


def strict_objects(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with ``additionalProperties: false`` on every object that declares ``properties``
    and says nothing about extra keys (in place; returned for chaining).

    JSON Schema allows undeclared keys by default, so a grammar built from a typical tool schema
    would let a model append any key it likes after the declared ones: valid JSON, rejected by
    the tool. OpenAI's strict mode and xgrammar's default make the same choice. Skipped entirely
    when the schema uses ``allOf``: there each branch lists only some of the properties, and
    closing one branch would forbid the others' keys.
    """
    if any("allOf" in sub for _, sub in subschemas(schema)):
        return schema
    for _, sub in subschemas(schema):
        if (
            "properties" in sub
            and "additionalProperties" not in sub
            and "patternProperties" not in sub
            and "unevaluatedProperties" not in sub
        ):
            sub["additionalProperties"] = False
    return schema


def _rebase_refs(schema: Any, prefix: str) -> Any:
    """Local ``$ref``s of a schema that is about to sit at ``prefix`` inside a bigger one."""
    if isinstance(schema, dict):
        out = {}
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#"):
                pointer = value[1:]
                # $defs / definitions are hoisted to the new root, so pointers into them stay valid.
                if not pointer.startswith(("/$defs/", "/definitions/")):
                    value = "#" + prefix + pointer
            out[key] = _rebase_refs(value, prefix)
        return out
    if isinstance(schema, list):
        return [_rebase_refs(v, prefix) for v in schema]
    return schema


def call_object_schema(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The schema of one Hermes tool call, ``{"name": <name>, "arguments": <parameters>}``.

    The parameters' ``$defs`` / ``definitions`` move to the root (``$ref``s resolve against the
    root of the schema the engine compiles); other local pointers, such as ``#`` for a recursive
    tool schema, are rebased under ``/properties/arguments``.
    """
    params = dict(parameters)
    hoisted = {key: params.pop(key) for key in ("$defs", "definitions") if key in params}
    params = _rebase_refs(params, "/properties/arguments")
    hoisted = {key: _rebase_refs(value, "/properties/arguments") for key, value in hoisted.items()}
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": params},
        "required": ["name", "arguments"],
        "additionalProperties": False,
        **hoisted,
    }
