"""Tools: template support detection, a full tool-call round trip, tool_choice, and the parser."""

from __future__ import annotations

import importlib
import json
import re
import sys

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

import ggro_integrations
from ggro_integrations import GGRODecoder
from ggro_integrations.errors import ConfigError
from ggro_integrations.langchain import ChatGGRO, parse_tool_calls, supports_tools, with_tool_template
from ggro_integrations.testing import CHATML_TEMPLATE, tiny_tokenizer
from ggro_integrations.tools import CHATML_TOOLS_TEMPLATE, ensure_tool_template


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'


def agent_script(prompt: str) -> str:
    """First turn: call the tool. After a tool response: answer with it."""
    if "<tool_response>" in prompt:
        result = prompt.rsplit("<tool_response>\n", 1)[1].split("\n</tool_response>")[0]
        return f"The sum is {result}."
    return CALL


def test_bind_tools_round_trip(scripted):
    decoder = scripted(agent_script)
    chat = ChatGGRO(decoder=decoder).bind_tools([add])
    question = HumanMessage("What is 2 + 3?")
    first = chat.invoke([question])
    # The tools reached the policy through its chat template.
    schema = {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers.",
            "parameters": {
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
                "type": "object",
            },
        },
    }
    assert "<tools>" in decoder.model.prompts[-1] and '"name": "add"' in decoder.model.prompts[-1]
    assert first.content == ""
    assert [(c["name"], c["args"]) for c in first.tool_calls] == [("add", {"a": 2, "b": 3})]
    call = first.tool_calls[0]
    result = add.invoke(call)
    assert isinstance(result, ToolMessage) and result.content == "5"
    second = chat.invoke([question, first, result])
    assert second.content == "The sum is 5." and second.tool_calls == []
    # The tool call and its result went back through the template, rendered the way the template renders them.
    expected_prompt = decoder.tokenizer.apply_chat_template(
        [
            {"role": "user", "content": "What is 2 + 3?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"type": "function", "id": call["id"], "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}
                ],
            },
            {"role": "tool", "content": "5", "tool_call_id": call["id"], "name": "add"},
        ],
        tools=[schema],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert decoder.model.prompts[-1] == expected_prompt
    # Streaming with tools bound returns the parsed call (in one chunk).
    chunks = list(chat.stream([question]))
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert merged.usage_metadata["output_tokens"] > 0


def test_structured_output_through_tool_calling(scripted):
    class Sum(BaseModel):
        """The sum of two numbers."""

        total: int

    decoder = scripted(lambda prompt: '<tool_call>\n{"name": "Sum", "arguments": {"total": 5}}\n</tool_call>')
    structured = ChatGGRO(decoder=decoder).with_structured_output(Sum, method="function_calling")
    assert structured.invoke("2+3?") == Sum(total=5)
    assert '"name": "Sum"' in decoder.model.prompts[-1]  # offered as a tool


def test_policy_without_tool_template_gets_a_clear_error(tiny_parts):
    _, policy, reward, _ = tiny_parts
    plain = tiny_tokenizer()  # ChatML without tools
    decoder = GGRODecoder(policy, plain, reward, max_new_tokens=4)
    assert not supports_tools(plain)
    chat = ChatGGRO(decoder=decoder)
    assert chat.profile["tool_calling"] is False  # agent builders can tell before binding anything
    with pytest.raises(ConfigError, match="does not render tools"):
        chat.bind_tools([add])
    with pytest.raises(ConfigError, match="cannot render them"):
        chat.invoke("hi", tools=[add])
    # with_tool_template gives a copy that can, leaving the shared tokenizer alone.
    twin = with_tool_template(decoder)
    assert supports_tools(twin.tokenizer) and not supports_tools(decoder.tokenizer)
    assert twin.tokenizer.chat_template == {"default": CHATML_TEMPLATE, "tool_use": CHATML_TOOLS_TEMPLATE}
    assert twin.model is decoder.model and twin.reward_model is decoder.reward_model
    # Prompts without tools are exactly the original template's; with tools they render them.
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert twin.prepare(conversation).prompt_ids == decoder.prepare(conversation).prompt_ids
    twin_chat = ChatGGRO(decoder=twin)
    assert twin_chat.profile["tool_calling"] is True
    assert twin_chat.profile["max_input_tokens"] == decoder.context_window
    twin_chat.bind_tools([add])


def test_ensure_tool_template_adds_a_tool_use_template_only_where_needed():
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    render = lambda tok, **kw: tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True, **kw)
    tokenizer = tiny_tokenizer()
    before = render(tokenizer)
    assert ensure_tool_template(tokenizer) is tokenizer and supports_tools(tokenizer)
    assert tokenizer.chat_template == {"default": CHATML_TEMPLATE, "tool_use": CHATML_TOOLS_TEMPLATE}
    assert render(tokenizer) == before  # transformers picks "tool_use" only when tools are passed
    schema = {"type": "function", "function": {"name": "add", "description": "Add.", "parameters": {}}}
    with_tools = render(tokenizer, tools=[schema])
    assert "<tools>" in with_tools and '"name": "add"' in with_tools and "Be brief." in with_tools
    ensure_tool_template(tokenizer)  # idempotent
    assert tokenizer.chat_template == {"default": CHATML_TEMPLATE, "tool_use": CHATML_TOOLS_TEMPLATE}
    renders_tools = tiny_tokenizer()
    renders_tools.chat_template = CHATML_TOOLS_TEMPLATE
    assert ensure_tool_template(renders_tools).chat_template == CHATML_TOOLS_TEMPLATE  # its own tool support
    bare = tiny_tokenizer(chat_template=False)
    assert not ensure_tool_template(bare).chat_template  # no template to keep: plain prompts stay plain


@pytest.mark.parametrize(
    "text, names, calls, content",
    [
        (
            'Let me add. <tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>',
            None,
            [("add", {"a": 1, "b": 2})],
            "Let me add.",
        ),
        (
            (
                '<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call><tool_call>{"name": "neg", '
                '"arguments": "{\\"x\\": 4}"}</tool_call>'
            ),
            None,
            [("add", {"a": 1}), ("neg", {"x": 4})],
            "",
        ),
        ('<tool_call>{"name": "add", "arguments": {"a": 1}}', None, [("add", {"a": 1})], ""),  # unterminated at EOS
        (
            '<tool_call>[{"name": "add", "arguments": {"a": 1}}, {"name": "neg", "arguments": {}}]</tool_call>',
            None,
            [("add", {"a": 1}), ("neg", {})],
            "",
        ),
        ('{"name": "add", "parameters": {"a": 1}}', ["add"], [("add", {"a": 1})], ""),
        ('```json\n[{"name": "add", "arguments": {"a": 1}}]\n```', ["add"], [("add", {"a": 1})], ""),
        ('{"name": "add", "parameters": {"a": 1}}', ["sub"], [], '{"name": "add", "parameters": {"a": 1}}'),
        ('{"answer": 3}', ["add"], [], '{"answer": 3}'),
        ('[TOOL_CALLS] [{"name": "add", "arguments": {"a": 1}}]', None, [("add", {"a": 1})], ""),
        ('<|python_tag|>{"name": "add", "parameters": {"a": 1}}', None, [("add", {"a": 1})], ""),
        ("Just text.", ["add"], [], "Just text."),
    ],
)
def test_parse_tool_calls(text, names, calls, content):
    parsed = parse_tool_calls(text, names)
    assert [(c["name"], c["args"]) for c in parsed.tool_calls] == calls
    assert parsed.content == content and not parsed.invalid_tool_calls
    assert all(c["id"].startswith("call_") and c["type"] == "tool_call" for c in parsed.tool_calls)


def test_parse_invalid_tool_calls_are_reported_not_dropped():
    parsed = parse_tool_calls('<tool_call>{"name": add}</tool_call>')
    assert parsed.tool_calls == [] and len(parsed.invalid_tool_calls) == 1
    assert "not valid JSON" in parsed.invalid_tool_calls[0]["error"]
    parsed = parse_tool_calls('<tool_call>{"name": "add", "arguments": "{bad"}</tool_call>')
    assert parsed.invalid_tool_calls[0]["name"] == "add"
    message = AIMessage(content=parsed.content, invalid_tool_calls=parsed.invalid_tool_calls)
    assert message.invalid_tool_calls[0]["args"] == "{bad"
    assert json.loads(json.dumps(parsed.invalid_tool_calls))


def test_missing_langchain_gives_install_hint(monkeypatch):
    # Pretend langchain-core is not installed, and forget our adapter so its import guard runs again.
    monkeypatch.setitem(sys.modules, "langchain_core", None)
    for name in [
        m for m in sys.modules if m == "ggro_integrations.langchain" or m.startswith("ggro_integrations.langchain.")
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delattr(ggro_integrations, "langchain", raising=False)
    with pytest.raises(ImportError, match=re.escape('pip install "ggro-integrations[langchain]"')):
        importlib.import_module("ggro_integrations.langchain")
