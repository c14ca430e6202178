"""bind_tools and with_structured_output driven by the core grammar: tool_choice variants, parallel calls,
schema-valid structured output (nested objects, enums, arrays, optional fields) from a random model,
streamed tool-call chunks, and bad input that fails at bind time, naming the problem."""

from __future__ import annotations

import json
from typing import Literal

import jsonschema
import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from lc_tiny import long_context_decoder
from pydantic import BaseModel, Field
from typing_extensions import Annotated, TypedDict

from ggro_integrations.errors import ConfigError, UnsupportedSchemaError
from ggro_integrations.langchain import ChatGGRO

pytest.importorskip("llguidance")


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def shout(text: str) -> str:
    """Shout a text."""
    return text.upper()


CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
SHOUT = '<tool_call>\n{"name": "shout", "arguments": {"text": "hi"}}\n</tool_call>'


def _calls(message: AIMessage) -> list[tuple[str, dict]]:
    assert all(c["id"] and c["type"] == "tool_call" for c in message.tool_calls)
    return [(c["name"], c["args"]) for c in message.tool_calls]


# -- tool_choice: the grammar decides, whatever the policy "wants" to write ------------------------


def test_auto_lets_the_policy_answer_in_text_or_call(scripted):
    text = ChatGGRO(decoder=scripted(lambda p: "Five.")).bind_tools([add])
    answer = text.invoke("What is 2 + 3?")
    assert answer.content == "Five." and answer.tool_calls == []
    call = ChatGGRO(decoder=scripted(lambda p: "Let me add. " + CALL, max_new_tokens=120)).bind_tools([add], tool_choice="auto")
    message = call.invoke("What is 2 + 3?")
    assert message.content == "Let me add." and _calls(message) == [("add", {"a": 2, "b": 3})]
    blocks = [b for b in message.content_blocks if b["type"] == "tool_call"]
    assert [(b["name"], b["args"], b["id"]) for b in blocks] == [("add", {"a": 2, "b": 3}, message.tool_calls[0]["id"])]


def test_required_and_named_choices_force_a_valid_call(scripted):
    # The policy writes prose; the grammar turns the response into a call with schema-valid arguments.
    decoder = scripted(lambda p: "I would rather chat.", max_new_tokens=120)
    chat = ChatGGRO(decoder=decoder)
    schemas = {"add": add.args_schema.model_json_schema(), "shout": shout.args_schema.model_json_schema()}
    for choice in ("any", "required", True):
        message = chat.bind_tools([add, shout], tool_choice=choice).invoke("hi")
        assert len(message.tool_calls) == 1, message
        name, args = _calls(message)[0]
        jsonschema.validate(args, schemas[name])
    for name in ("shout", {"type": "function", "function": {"name": "shout"}}):
        message = chat.bind_tools([add, shout], tool_choice=name).invoke("hi")
        assert [c["name"] for c in message.tool_calls] == ["shout"]
        jsonschema.validate(message.tool_calls[0]["args"], schemas["shout"])
    # A named choice overrides the policy's own choice of tool.
    wants_add = ChatGGRO(decoder=scripted(lambda p: CALL, max_new_tokens=120))
    assert [c["name"] for c in wants_add.bind_tools([add, shout], tool_choice="shout").invoke("hi").tool_calls] == ["shout"]


def test_none_keeps_the_tools_in_view_but_forbids_a_call(scripted):
    decoder = scripted(lambda p: CALL)
    message = ChatGGRO(decoder=decoder).bind_tools([add], tool_choice="none").invoke("What is 2 + 3?")
    assert "<tools>" in decoder.model.prompts[-1]
    assert message.tool_calls == [] and message.invalid_tool_calls == []
    assert "<tool_call>" not in message.content


def test_parallel_calls_are_opt_in(scripted):
    decoder = scripted(lambda p: CALL + SHOUT, max_new_tokens=160)
    chat = ChatGGRO(decoder=decoder)
    assert _calls(chat.bind_tools([add, shout]).invoke("both")) == [("add", {"a": 2, "b": 3})]  # one call, then the end
    both = chat.bind_tools([add, shout], parallel_tool_calls=True).invoke("both")
    assert _calls(both) == [("add", {"a": 2, "b": 3}), ("shout", {"text": "hi"})]


def test_stream_sends_the_text_then_each_call_as_a_tool_call_chunk(scripted):
    chat = ChatGGRO(decoder=scripted(lambda p: "Let me add. " + CALL, max_new_tokens=120)).bind_tools([add])
    chunks = list(chat.stream("What is 2 + 3?"))
    text = "".join(c.content for c in chunks)
    assert text == "Let me add." and all("<tool" not in c.content for c in chunks)
    assert len(chunks) > 2  # the text came in pieces, before the call was complete
    (last,) = [c for c in chunks if c.tool_call_chunks]
    assert last is chunks[-1]
    assert [(c["name"], json.loads(c["args"]), c["index"]) for c in last.tool_call_chunks] == [("add", {"a": 2, "b": 3}, 0)]
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert _calls(merged) == [("add", {"a": 2, "b": 3})]


def test_bad_tools_and_choices_fail_at_bind_time(scripted):
    chat = ChatGGRO(decoder=scripted(lambda p: "ok"))

    @tool
    def tag(tags: list[str]) -> str:
        """Tag something."""
        return ",".join(tags)

    schema = {
        "type": "function",
        "function": {
            "name": "tag",
            "description": "Tag.",
            "parameters": {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}},
        },
    }
    with pytest.raises(UnsupportedSchemaError, match=r"tool 'tag' parameters: JSON-schema keyword 'uniqueItems' at /properties/tags"):
        chat.bind_tools([schema])
    chat.bind_tools([tag])  # the same tool without the keyword compiles
    with pytest.raises(ConfigError, match=r"names no bound tool; bound tools are \['add'\]"):
        chat.bind_tools([add], tool_choice="multiply")
    with pytest.raises(ConfigError, match="tool_choice must be"):
        chat.bind_tools([add], tool_choice=3)
    other_add = {"type": "function", "function": {"name": "add", "description": "Add.", "parameters": {"type": "object", "properties": {"x": {"type": "number"}}}}}
    with pytest.raises(ConfigError, match="unique names"):
        chat.bind_tools([add, other_add])
    assert len(chat.bind_tools([add, add]).kwargs["tools"]) == 1  # the same tool twice is offered once


def test_profile_says_tool_choice_and_structured_output_are_supported(scripted):
    profile = ChatGGRO(decoder=scripted(lambda p: "ok")).profile
    assert profile["tool_calling"] and profile["tool_choice"] and profile["structured_output"]


# -- with_structured_output: schema-valid from a random policy ------------------------------------


class Address(BaseModel):
    street: str
    city: str = Field(max_length=12)


class Person(BaseModel):
    """A person."""

    name: str
    role: Literal["admin", "editor", "viewer"]
    age: int = Field(ge=0, le=120)
    address: Address  # nested object
    tags: list[str] = Field(max_length=3)  # array
    nickname: str | None = None  # optional


class PersonDict(TypedDict):
    name: Annotated[str, ..., "the name"]
    role: Annotated[Literal["admin", "editor", "viewer"], ..., "the role"]
    scores: Annotated[list[int], ..., "scores"]
    nickname: Annotated[str | None, None, "optional nickname"]


@pytest.fixture(scope="module")
def random_chat():
    # A random policy: nothing but the grammar makes its output schema-valid. 120 tokens: the
    # budget closer (constraints/closing.py) ends strings the policy would never close.
    return ChatGGRO(decoder=long_context_decoder(max_new_tokens=120))


@pytest.mark.parametrize("strategy", ["greedy", "ggro"])
def test_pydantic_output_is_schema_valid(random_chat, strategy):
    result = random_chat.with_structured_output(Person, include_raw=True).invoke("Describe a user.", strategy=strategy)
    raw = result["raw"]
    assert result["parsing_error"] is None and raw.response_metadata["finish_reason"] == "eos"
    jsonschema.validate(json.loads(raw.content), Person.model_json_schema())  # independent of pydantic's parse
    assert isinstance(result["parsed"], Person) and result["parsed"] == Person.model_validate_json(raw.content)
    if strategy == "ggro":
        events = raw.response_metadata["ggro_interventions"]
        assert events and all(e["constrained"] for e in events)  # nudges happened inside the schema


def test_typeddict_and_json_schema_inputs_give_dicts(random_chat):
    parsed = random_chat.with_structured_output(PersonDict).invoke("Describe a user.")
    assert isinstance(parsed, dict) and set(parsed) <= set(PersonDict.__annotations__)
    assert {"name", "role", "scores"} <= set(parsed) and parsed["role"] in ("admin", "editor", "viewer")
    assert all(isinstance(s, int) for s in parsed["scores"])
    schema = {
        "type": "object",
        "properties": {"level": {"enum": ["low", "high"]}, "items": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2}},
        "required": ["level", "items"],
    }
    parsed = random_chat.with_structured_output(schema).invoke("Rate it.")
    jsonschema.validate(parsed, {**schema, "additionalProperties": False})


def test_json_mode_writes_one_json_object(random_chat):
    parsed = random_chat.with_structured_output(None, method="json_mode").invoke("Reply in JSON.")
    assert isinstance(parsed, dict)


def test_structured_stream_yields_valid_objects(random_chat):
    class Small(BaseModel):
        level: Literal["low", "high"]
        note: str = Field(max_length=8)

    chunks = list(random_chat.with_structured_output(Small).stream("Rate it."))
    assert chunks and all(isinstance(c, Small) for c in chunks)


def test_include_raw_reports_a_truncated_output_as_a_parsing_error():
    chat = ChatGGRO(decoder=long_context_decoder(max_new_tokens=3))  # too few tokens to close any Person
    result = chat.with_structured_output(Person, include_raw=True).invoke("Describe a user.")
    assert result["parsed"] is None and result["parsing_error"] is not None
    assert result["raw"].response_metadata["finish_reason"] == "length"


def test_structured_output_bad_input(random_chat):
    with pytest.raises(UnsupportedSchemaError, match=r"'uniqueItems' at /properties/tags/uniqueItems"):
        random_chat.with_structured_output({"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}})
    with pytest.raises(ConfigError, match="method must be one of"):
        random_chat.with_structured_output(Person, method="xml")
    with pytest.raises(ConfigError, match="needs a schema"):
        random_chat.with_structured_output(None)
    with pytest.raises(ConfigError, match=r"unsupported argument\(s\) \['temperature'\]"):
        random_chat.with_structured_output(Person, temperature=0.3)
