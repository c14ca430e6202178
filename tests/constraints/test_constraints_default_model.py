"""The real embedded default (SmolLM2-135M-Instruct) under tool-call and JSON-schema grammars. Marked slow."""

from __future__ import annotations

import json

import jsonschema
import pytest
from grammar_loop import chat_prompt, generate, hermes_calls, text_of

from ggro_integrations.constraints import Grammar, LogitsHooks, tool_call_grammar

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

MAGIC = {
    "type": "function",
    "function": {
        "name": "magic_function",
        "description": "Applies a magic function to an input.",
        "parameters": {"type": "object", "properties": {"input": {"type": "integer"}}, "required": ["input"]},
    },
}


@pytest.fixture(scope="module")
def smol():
    from ggro_integrations.models import PolicyLoadError, load_policy

    try:
        return load_policy("default")
    except PolicyLoadError as exc:
        pytest.skip(f"the embedded default is not installed: {exc}")


def test_default_model_calls_the_tool_when_required(smol):
    from ggro_integrations.tools import CHATML_TOOLS_TEMPLATE, parse_tool_calls

    model, tok = smol
    prompt = chat_prompt(tok, "What is the value of magic_function(3)? Use the tool.", tools=[MAGIC], chat_template=CHATML_TOOLS_TEMPLATE)
    # Unconstrained, this model answers in prose; under the grammar it must call the tool.
    grammar = tool_call_grammar([MAGIC], tok, tool_choice="required", parallel_tool_calls=False)
    ids, ended = generate(model, LogitsHooks(grammar), prompt, [tok.eos_token_id], max_new_tokens=40)
    assert ended
    text = text_of(tok, ids)
    head, calls = hermes_calls(text)
    assert head == "" and len(calls) == 1 and calls[0]["name"] == "magic_function"
    assert isinstance(calls[0]["arguments"]["input"], int)
    parsed = parse_tool_calls(text, ["magic_function"])
    assert parsed.tool_calls[0]["args"] == calls[0]["arguments"] and not parsed.invalid_tool_calls


def test_default_model_structured_output(smol):
    model, tok = smol
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}, "country": {"type": "string", "maxLength": 30}},
        "required": ["city", "country"],
    }
    grammar = Grammar.from_json_schema(schema, tok)
    prompt = chat_prompt(tok, "Name the capital of France and its country as JSON.")
    ids, ended = generate(model, LogitsHooks(grammar), prompt, [tok.eos_token_id], max_new_tokens=40)
    assert ended
    jsonschema.validate(json.loads(text_of(tok, ids)), schema)
