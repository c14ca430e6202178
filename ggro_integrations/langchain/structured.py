"""``ChatGGRO.with_structured_output``: a schema becomes a grammar (or a forced tool call) plus a parser.

The constraint itself is the core's (``grammar=`` / ``tools=`` + ``tool_choice=`` per call, see
docs/tools-and-structured-output.md); this module only translates LangChain's schema forms —
pydantic (v2 and v1) classes, ``TypedDict`` classes, JSON-schema dicts, OpenAI tool dicts — and
picks LangChain's parser for the result.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

from ..errors import ConfigError

METHODS = ("json_schema", "function_calling", "json_mode")

JSON_OBJECT: dict[str, Any] = {"type": "object"}
"""``json_mode``'s grammar: any JSON object."""


def json_schema_of(schema: Any) -> dict[str, Any]:
    """The JSON schema the output must follow, from any form ``with_structured_output`` takes."""
    if isinstance(schema, type) and is_basemodel_subclass(schema):
        if hasattr(schema, "model_json_schema"):  # pydantic v2
            return schema.model_json_schema()
        return schema.schema()  # pydantic.v1
    if isinstance(schema, dict) and not _is_tool_dict(schema):
        return dict(schema)  # a JSON schema
    try:
        return convert_to_openai_tool(schema)["function"]["parameters"]  # TypedDict, OpenAI tool / function dict
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"with_structured_output cannot read schema {schema!r}: pass a pydantic model class, a TypedDict "
            f"class or a JSON schema dict ({exc})."
        ) from exc


def _is_tool_dict(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "function" or ("name" in schema and "parameters" in schema)


def structured_output(model: Any, schema: Any, *, method: str, include_raw: bool) -> Runnable:
    """The runnable ``ChatGGRO.with_structured_output`` returns."""
    if method not in METHODS:
        raise ConfigError(f"method must be one of {list(METHODS)}; got {method!r}.")
    if schema is None and method != "json_mode":
        raise ConfigError(f"with_structured_output(method={method!r}) needs a schema; only 'json_mode' works without one.")
    pydantic_class = schema if isinstance(schema, type) and is_basemodel_subclass(schema) else None
    trace = {"kwargs": {"method": method}, "schema": schema}
    if method == "function_calling":
        name = convert_to_openai_tool(schema)["function"]["name"]
        bound = model.bind_tools([schema], tool_choice=name, ls_structured_output_format=trace)
        parser: Runnable = (
            PydanticToolsParser(tools=[pydantic_class], first_tool_only=True)
            if pydantic_class is not None
            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        )
    else:
        grammar = json_schema_of(schema) if method == "json_schema" else JSON_OBJECT
        kwargs: dict[str, Any] = {"grammar": grammar}
        if schema is not None:
            kwargs["ls_structured_output_format"] = trace
        model._settle({"grammar": grammar})  # compile now: an unsupported keyword fails here, naming it
        bound = model.bind(**kwargs)
        parser = PydanticOutputParser(pydantic_object=pydantic_class) if pydantic_class is not None else JsonOutputParser()
    if not include_raw:
        return bound | parser
    parse = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    keep_raw = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=bound) | parse.with_fallbacks([keep_raw], exception_key="parsing_error")
