"""Tool-call grammars in the Hermes / Qwen 2.5 format for every tool_choice, on SmolLM2's vocabulary."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch
from grammar_loop import chat_prompt, drive, generate, hermes_calls, sampler, text_of
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ggro_integrations.constraints import (
    HERMES,
    Grammar,
    LogitsHooks,
    ToolCallFormat,
    ToolSpec,
    normalize_tool_choice,
    strict_objects,
    tool_call_grammar,
)
from ggro_integrations.errors import ConfigError, GrammarViolationError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer", "minimum": -99, "maximum": 99}, "b": {"type": "integer", "minimum": -99, "maximum": 99}},
            "required": ["a", "b"],
        },
    },
}
WEATHER = {
    "name": "get_weather",  # the bare function form
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 1, "maxLength": 12},
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "fields": {"type": "array", "items": {"enum": ["wind", "rain"]}, "maxItems": 2},
        },
        "required": ["city"],
    },
}
# Pydantic-style nested model: $defs and a $ref that must still resolve once wrapped in a call.
LOOKUP = {
    "name": "lookup",
    "parameters": {
        "$defs": {"Query": {"type": "object", "properties": {"text": {"type": "string", "maxLength": 10}}, "required": ["text"]}},
        "type": "object",
        "properties": {"query": {"$ref": "#/$defs/Query"}, "limit": {"type": "integer", "minimum": 1, "maximum": 5}},
        "required": ["query"],
    },
}
TOOLS = [ADD, WEATHER, LOOKUP]
SCHEMAS = {
    "add": ADD["function"]["parameters"],
    "get_weather": WEATHER["parameters"],
    "lookup": LOOKUP["parameters"],
}


def check_calls(calls, allowed_names):
    assert calls, "no tool call"
    for call in calls:
        assert list(call) == ["name", "arguments"]
        assert call["name"] in allowed_names
        jsonschema.validate(call["arguments"], strict_objects(json.loads(json.dumps(SCHEMAS[call["name"]]))))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    choice=st.sampled_from(["required", "any", "add", "lookup", {"type": "function", "function": {"name": "get_weather"}}]),
    parallel=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
    choices=st.lists(st.integers(0, 7), max_size=150),
)
def test_forced_calls_are_valid_whatever_allowed_tokens_are_picked(smol_tokenizer, choice, parallel, seed, choices):
    grammar = tool_call_grammar(TOOLS, smol_tokenizer, tool_choice=choice, parallel_tool_calls=parallel)
    ids, ended = drive(grammar.start(), choices, seed=seed, max_steps=900)
    # With parallel calls allowed, a random walk may keep opening calls past any step bound; it
    # must end only when exactly one call is allowed.
    assert ended or parallel
    assume(ended)
    head, calls = hermes_calls(text_of(smol_tokenizer, ids))
    assert head == ""  # a forced call opens the response
    mode = normalize_tool_choice(choice, list(SCHEMAS))
    names = [mode.removeprefix("tool:")] if mode.startswith("tool:") else list(SCHEMAS)
    check_calls(calls, names)
    if mode.startswith("tool:") or not parallel:
        assert len(calls) == 1


def test_required_cannot_end_or_talk_before_the_call(smol_tokenizer):
    state = tool_call_grammar(TOOLS, smol_tokenizer, tool_choice="required").start()
    assert not state.can_end() and not state.allowed()[smol_tokenizer.eos_token_id]
    # forced_tokens may stop short of a token that could still merge with what follows.
    assert smol_tokenizer.decode(state.forced_tokens()).startswith('<tool_call>\n{"name":')
    named = tool_call_grammar(TOOLS, smol_tokenizer, tool_choice="lookup").start()
    assert smol_tokenizer.decode(named.forced_tokens()).startswith('<tool_call>\n{"name": "lookup", "arguments": {"query": {"text":')


def test_parallel_calls_or_exactly_one(smol_tokenizer):
    one_call = smol_tokenizer.encode('<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>', add_special_tokens=False)
    single = tool_call_grammar(TOOLS, smol_tokenizer, tool_choice="required", parallel_tool_calls=False).start()
    single.advance_many(one_call)
    assert single.forced_token() == smol_tokenizer.eos_token_id  # nothing but the end
    many = tool_call_grammar(TOOLS, smol_tokenizer, tool_choice="required").start()
    many.advance_many(one_call)
    assert many.can_end() and many.forced_token() is None
    # A second call, with or without the newline Qwen's template puts between calls.
    for sep in ("\n", ""):
        twin = many.fork()
        twin.advance_many(smol_tokenizer.encode(sep + '<tool_call>\n{"name": "lookup", "arguments": ', add_special_tokens=False))
        _, ended = drive(twin, [2, 1], seed=1)
        assert ended


def test_auto_allows_plain_text_and_constrains_a_call_once_opened(smol_tokenizer):
    grammar = tool_call_grammar(TOOLS, smol_tokenizer, tool_choice="auto")
    text = grammar.start()
    text.advance_many(smol_tokenizer.encode("2 + 3 is 5. You can use <tool_ and </tool_call> freely.", add_special_tokens=False))
    assert text.can_end() and text.allowed()[smol_tokenizer.eos_token_id]
    opened = grammar.start()
    opened.advance_many(smol_tokenizer.encode("Let me add them. <tool_call>", add_special_tokens=False))
    # Once the tag is written, the grammar takes over: the rest of the opening is forced...
    assert smol_tokenizer.decode(opened.forced_tokens()).startswith('\n{"name":')
    assert not opened.can_end()
    # ... free text is no longer possible ...
    with pytest.raises(GrammarViolationError):
        opened.fork().advance_many(smol_tokenizer.encode("\nsure thing", add_special_tokens=False))
    # ... and whatever allowed tokens follow, the result is a valid call.
    for seed in range(4):
        ids, ended = drive(opened.fork(), [seed, 3, 1], seed=seed, max_steps=600)
        assert ended
        head, calls = hermes_calls("Let me add them. <tool_call>" + text_of(smol_tokenizer, ids))
        assert head == "Let me add them. "
        check_calls(calls, list(SCHEMAS))


def test_auto_trigger_is_matched_on_bytes_not_tokens(smol_tokenizer):
    """However the tag is split into tokens, and even when a token completes it and runs on into the
    call, the grammar switches at the tag: no decoder-side string matching needed."""
    grammar = tool_call_grammar(TOOLS, smol_tokenizer, tool_choice="auto")
    state = grammar.start()
    by_char = [smol_tokenizer.convert_tokens_to_ids(c) for c in ["<", "t", "o", "o", "l", "_", "c", "a", "l", "l", ">"]]
    state.advance_many(by_char)
    assert smol_tokenizer.decode(state.forced_tokens()).startswith('\n{"name":')
    # SmolLM2 has the token '={"': with a "TOOL=" trigger it closes the tag and opens the JSON at once.
    fmt = ToolCallFormat(begin="TOOL=", end="", separator="", trigger="TOOL=")
    state = tool_call_grammar([ADD], smol_tokenizer, tool_choice="auto", format=fmt, parallel_tool_calls=False).start()
    state.advance_many(smol_tokenizer.encode("Sure TOOL", add_special_tokens=False))
    straddling = smol_tokenizer.convert_tokens_to_ids('={"')
    assert state.allowed()[straddling]
    state.advance(straddling)
    ids, ended = drive(state, [1], seed=0)
    assert ended
    call = json.loads('{"' + text_of(smol_tokenizer, ids))
    check_calls([call], ["add"])


def test_auto_with_a_random_policy_is_text_or_valid_calls(smol_tokenizer, smol_tiny_lm):
    grammar = tool_call_grammar(TOOLS, smol_tokenizer, tool_choice="auto")
    prompt = chat_prompt(smol_tokenizer, "What is 2 + 3?")
    for seed in range(3):
        ids, _ = generate(smol_tiny_lm, LogitsHooks(grammar), prompt, [smol_tokenizer.eos_token_id], max_new_tokens=120, pick=sampler(seed))
        _, calls = hermes_calls(text_of(smol_tokenizer, ids))
        if calls:
            check_calls(calls, list(SCHEMAS))


def test_none_never_opens_a_call(smol_tokenizer):
    state = tool_call_grammar(TOOLS, smol_tokenizer, tool_choice="none").start()
    state.advance_many(smol_tokenizer.encode("No tools needed: <tool_", add_special_tokens=False))
    assert state.can_end()
    with pytest.raises(GrammarViolationError):
        state.fork().advance_many(smol_tokenizer.encode("call>", add_special_tokens=False))
    # Without tools at all, "none" is still a valid request.
    assert tool_call_grammar([], smol_tokenizer, tool_choice="none").start().can_end()


def test_recursive_tool_schema(smol_tokenizer):
    tree = {
        "name": "plan",
        "parameters": {
            "type": "object",
            "properties": {"step": {"enum": ["a", "b"]}, "then": {"type": "array", "items": {"$ref": "#"}, "maxItems": 1}},
            "required": ["step", "then"],
        },
    }
    grammar = tool_call_grammar([tree], smol_tokenizer, tool_choice="plan")
    state = grammar.start()
    state.advance_many(smol_tokenizer.encode('<tool_call>\n{"name": "plan", "arguments": {"step": "a", "then": [{"step": "b", "then": [', add_special_tokens=False))
    ids, ended = drive(state, [0], seed=0)
    assert ended
    assert smol_tokenizer.decode(ids[:-1]) == ']}]}}\n</tool_call>'


def test_special_token_tags(tokenizer):
    """Tokenizers where <tool_call> is a special token (not bytes) get the token id in the grammar."""
    import copy

    special = copy.deepcopy(tokenizer)
    special.add_special_tokens({"additional_special_tokens": ["<tool_call>", "</tool_call>"]})
    open_id = special.convert_tokens_to_ids("<tool_call>")
    for choice in ("required", "auto"):
        grammar = tool_call_grammar([ADD], special, tool_choice=choice)
        state = grammar.start()
        if choice == "auto":
            state.advance_many(special.encode("hi ", add_special_tokens=False))
            assert state.allowed()[open_id]
            state.advance(open_id)
        else:
            assert state.forced_token() == open_id
        ids, ended = drive(state, [1, 2], seed=3)
        assert ended
        text = ("hi <tool_call>" if choice == "auto" else "") + special.decode(ids[:-1])
        _, calls = hermes_calls(text)
        check_calls(calls, ["add"])


def test_the_grammar_accepts_what_the_tool_template_renders(smol_tokenizer):
    """The ChatML tool template's own rendering of an assistant tool call is a valid grammar output."""
    from ggro_integrations.tools import CHATML_TOOLS_TEMPLATE, parse_tool_calls

    calls = [
        {"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}},
        {"type": "function", "function": {"name": "lookup", "arguments": {"query": {"text": "pi"}, "limit": 2}}},
    ]
    rendered = smol_tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": calls}],
        tools=TOOLS,
        chat_template=CHATML_TOOLS_TEMPLATE,
        tokenize=False,
    )
    reply = rendered.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    state = tool_call_grammar(TOOLS, smol_tokenizer, tool_choice="required").start()
    state.advance_many(smol_tokenizer.encode(reply, add_special_tokens=False))
    assert state.can_end()
    # And what the grammar produces, the package's parser reads back.
    state = tool_call_grammar(TOOLS, smol_tokenizer, tool_choice="get_weather").start()
    ids, ended = drive(state, [1, 0, 2], seed=2)
    assert ended
    parsed = parse_tool_calls(text_of(smol_tokenizer, ids), list(SCHEMAS))
    assert [c["name"] for c in parsed.tool_calls] == ["get_weather"] and not parsed.invalid_tool_calls
    jsonschema.validate(parsed.tool_calls[0]["args"], WEATHER["parameters"])


def test_tool_specs_and_tool_choice_forms(smol_tokenizer):
    spec = ToolSpec("echo", {"type": "object", "properties": {"x": {"const": 1}}, "required": ["x"]})
    grammar = tool_call_grammar([spec], smol_tokenizer, tool_choice=True, parallel_tool_calls=False)
    ids, ended = drive(grammar.start(), [], seed=0)
    assert ended
    assert text_of(smol_tokenizer, ids) == '<tool_call>\n{"name": "echo", "arguments": {"x": 1}}\n</tool_call>'
    assert normalize_tool_choice(None, ["a"]) == "auto" and normalize_tool_choice(False, ["a"]) == "none"
    assert normalize_tool_choice({"name": "a"}, ["a"]) == "tool:a"
    # A tool without parameters takes "{}".
    bare = tool_call_grammar([{"name": "ping"}], smol_tokenizer, tool_choice="ping")
    ids, _ = drive(bare.start(), [], seed=0)
    assert text_of(smol_tokenizer, ids) == '<tool_call>\n{"name": "ping", "arguments": {}}\n</tool_call>'


def test_custom_format(smol_tokenizer):
    fmt = ToolCallFormat(begin="<function>", end="</function>", separator="", trigger="<function>")
    grammar = tool_call_grammar([ADD], smol_tokenizer, tool_choice="auto", format=fmt)
    state = grammar.start()
    state.advance_many(smol_tokenizer.encode("ok <function>", add_special_tokens=False))
    ids, ended = drive(state, [0], seed=0)
    assert ended and text_of(smol_tokenizer, ids).startswith('{"name": "add", "arguments": {"a": ')
    with pytest.raises(ConfigError, match="trigger"):
        ToolCallFormat(begin="<tool_call>\n", trigger="<call>")
    assert HERMES.begin == "<tool_call>\n"


def test_tool_grammars_are_cached(smol_tokenizer):
    first = tool_call_grammar(TOOLS, smol_tokenizer, tool_choice="auto")
    assert tool_call_grammar(TOOLS, smol_tokenizer, tool_choice="auto") is first
    assert isinstance(first, Grammar) and "auto" in repr(first)
    assert tool_call_grammar(TOOLS, smol_tokenizer, tool_choice="required") is not first
    assert torch.equal(first.start().allowed(), first.start().allowed())
