"""GGROLLM as a LlamaIndex FunctionCallingLLM: chat_with_tools, predict_and_call, FunctionAgent,
structured_predict / as_structured_llm, streamed text that never shows call markup."""

from __future__ import annotations

import pytest

pytest.importorskip("llguidance", reason="tool calls are grammar-constrained: needs the [tools] extra")

from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel, Field

from ggro_integrations.llama_index import GGROLLM
from ggro_integrations.llama_index.tool_calls import ToolCallHoldback, to_conversation
from ggro_integrations.testing import scripted_decoder, tiny_decoder, tiny_tokenizer


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


ADD = FunctionTool.from_defaults(add)
CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'


def agent_script(prompt: str) -> str:
    """Call the tool first; once its result is in the prompt, answer with it."""
    if "<tool_response>" in prompt:
        return "The sum is 5."
    if "<tools>" in prompt:
        return "Let me add them. " + CALL
    return "I can only add."


@pytest.fixture()
def llm():
    return GGROLLM(decoder=scripted_decoder(agent_script))


class Sum(BaseModel):
    """The sum of two numbers."""

    # Bounded, so that a random policy's digits end well inside the token budget.
    total: int = Field(ge=0, le=999)


class AddArgs(BaseModel):
    a: int = Field(ge=0, le=99)
    b: int = Field(ge=0, le=99)


def test_metadata_says_function_calling_when_the_template_renders_tools(llm):
    assert llm.metadata.is_function_calling_model is True
    plain = tiny_decoder()
    plain.tokenizer = tiny_tokenizer()  # ChatML without tools
    assert GGROLLM(decoder=plain).metadata.is_function_calling_model is False


def test_chat_with_tools_returns_tool_call_blocks(llm):
    response = llm.chat_with_tools([ADD], user_msg="What is 2 plus 3?")
    assert "<tools>" in llm.decoder.model.prompts[-1]
    (selection,) = llm.get_tool_calls_from_response(response)
    assert (selection.tool_name, selection.tool_kwargs) == ("add", {"a": 2, "b": 3}) and selection.tool_id
    assert response.message.content == "Let me add them."  # the markup is not text
    assert [type(b) for b in response.message.blocks] == [TextBlock, ToolCallBlock]
    assert response.additional_kwargs["interventions_accepted"] == 0  # the GGRO summary is still there


def test_no_tool_call_is_an_error_only_when_asked(llm):
    response = llm.chat([ChatMessage(role=MessageRole.USER, content="hi")])
    assert llm.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    with pytest.raises(ValueError, match="tool_required=True"):
        llm.get_tool_calls_from_response(response)


def test_predict_and_call_runs_the_tool(llm):
    output = llm.predict_and_call([ADD], user_msg="What is 2 plus 3?")
    assert output.response == "5"


def test_tool_results_render_through_the_template(llm):
    call = ChatMessage(role=MessageRole.ASSISTANT, blocks=[ToolCallBlock(tool_call_id="c1", tool_name="add", tool_kwargs={"a": 2, "b": 3})])
    result = ChatMessage(role="tool", blocks=[TextBlock(text="5")], additional_kwargs={"tool_call_id": "c1"})
    conversation = to_conversation([ChatMessage(role=MessageRole.USER, content="2+3?"), call, result])
    assert conversation[1]["tool_calls"][0]["function"] == {"name": "add", "arguments": {"a": 2, "b": 3}}
    assert conversation[2] == {"role": "tool", "content": "5", "tool_call_id": "c1"}
    response = llm.chat_with_tools([ADD], chat_history=[ChatMessage(role=MessageRole.USER, content="2+3?"), call, result])
    prompt = llm.decoder.model.prompts[-1]
    assert "<tool_response>\n5\n</tool_response>" in prompt and '"name": "add"' in prompt
    assert response.message.content == "The sum is 5."


def test_streamed_text_never_shows_call_markup(llm):
    chunks = list(llm.stream_chat_with_tools([ADD], user_msg="What is 2 plus 3?"))
    streamed = "".join(c.delta or "" for c in chunks)
    assert "<tool" not in streamed and streamed.strip() == "Let me add them."
    assert [s.tool_name for s in llm.get_tool_calls_from_response(chunks[-1])] == ["add"]
    assert all(not llm.get_tool_calls_from_response(c, error_on_no_tool_call=False) for c in chunks[:-1])


@pytest.mark.parametrize("text,final,expected", [("Hi <tool", False, "Hi"), ("Hi there", False, "Hi there"), ("Hi ", False, "Hi"), ("Hi <tool_call>\n{", False, "Hi"), ("Hi <to", True, "Hi <to")])
def test_holdback_of_a_partial_tag(text, final, expected):
    assert ToolCallHoldback().update(text, final=final)[0] == expected


async def test_function_agent_calls_the_tool_and_answers(llm):
    from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult

    agent = FunctionAgent(tools=[ADD], llm=llm)
    handler = agent.run("What is 2 plus 3?")
    results = [event async for event in handler.stream_events() if isinstance(event, ToolCallResult)]
    response = await handler
    assert [(r.tool_name, r.tool_kwargs, r.tool_output.content) for r in results] == [("add", {"a": 2, "b": 3}, "5")]
    assert str(response).strip() == "The sum is 5."


def test_a_random_policy_calls_a_tool_when_required():
    # No script: a tiny random model. The grammar alone makes the call valid.
    llm = GGROLLM(decoder=tiny_decoder(max_new_tokens=120))
    bounded = FunctionTool.from_defaults(add, fn_schema=AddArgs)
    response = llm.chat_with_tools([bounded], user_msg="Add two and three.", tool_required=True)
    (selection,) = llm.get_tool_calls_from_response(response)
    assert selection.tool_name == "add" and set(selection.tool_kwargs) == {"a", "b"}
    assert all(isinstance(v, int) for v in selection.tool_kwargs.values())


def test_structured_predict_on_a_random_policy():
    from llama_index.core.prompts import PromptTemplate

    llm = GGROLLM(decoder=tiny_decoder(max_new_tokens=120))
    assert isinstance(llm.structured_predict(Sum, PromptTemplate("What is {q}?"), q="2+3"), Sum)
    structured = llm.as_structured_llm(Sum)
    response = structured.chat([ChatMessage(role=MessageRole.USER, content="What is 2+3?")])
    assert isinstance(response.raw, Sum)
