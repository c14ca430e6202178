"""Bad input: each error names the schema feature or parameter at fault and says how to fix it."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from ggro_integrations.constraints import Grammar, _engine, tool_call_grammar
from ggro_integrations.errors import ConfigError, GrammarError, UnsupportedSchemaError

TAGS = {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3, "uniqueItems": True}


def test_unsupported_keyword_is_named_with_its_path(tokenizer):
    schema = {"type": "object", "properties": {"tags": TAGS}, "required": ["tags"]}
    with pytest.raises(UnsupportedSchemaError) as info:
        Grammar.from_json_schema(schema, tokenizer)
    err = info.value
    assert err.feature == "uniqueItems" and err.path == "/properties/tags/uniqueItems"
    assert "'uniqueItems' at /properties/tags/uniqueItems" in str(err)
    assert "unsupported='ignore'" in str(err) and "llguidance" in str(err)
    assert isinstance(err, ValueError)  # callers' `except ValueError` keeps working


def test_several_unsupported_keywords(tokenizer):
    schema = {"type": "integer", "not": {"const": 3}, "if": {"minimum": 5}, "then": {"maximum": 9}}
    with pytest.raises(UnsupportedSchemaError, match="also unsupported") as info:
        Grammar.from_json_schema(schema, tokenizer)
    assert info.value.feature in {"not", "if", "then"} and info.value.path == "/" + info.value.feature


def test_unknown_format_lists_the_supported_ones(tokenizer):
    schema = {"type": "object", "properties": {"color": {"type": "string", "format": "x-color"}}}
    with pytest.raises(UnsupportedSchemaError, match="'x-color' at /properties/color/format") as info:
        Grammar.from_json_schema(schema, tokenizer)
    assert info.value.feature == "format" and "date-time" in str(info.value)


def test_ignore_drops_unsupported_keywords_with_a_warning(tokenizer):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grammar = Grammar.from_json_schema(TAGS, tokenizer, unsupported="ignore")
    assert any("uniqueItems" in str(w.message) for w in caught)
    state = grammar.start()
    state.advance_many(tokenizer.encode('["a", "a"]'))  # uniqueItems is not enforced
    assert state.can_end()
    with pytest.raises(ConfigError, match="unsupported must be 'error' or 'ignore'"):
        Grammar.from_json_schema(TAGS, tokenizer, unsupported="warn")


def test_invalid_schemas(tokenizer):
    with pytest.raises(GrammarError, match="schema: cannot be compiled.*strin"):
        Grammar.from_json_schema({"type": "strin"}, tokenizer)
    with pytest.raises(ConfigError, match="schema must be a JSON schema"):
        Grammar.from_json_schema(42, tokenizer)
    with pytest.raises(ConfigError, match="schema is a string but not valid JSON"):
        Grammar.from_json_schema("{type: object}", tokenizer)
    with pytest.raises(ConfigError, match="accepts no value"):
        Grammar.from_json_schema(False, tokenizer)
    with pytest.raises(ConfigError, match="separators must be"):
        Grammar.from_json_schema({"type": "integer"}, tokenizer, separators=",")
    with pytest.raises(GrammarError, match="pattern: cannot be compiled.*unclosed group"):
        Grammar.from_regex("(a", tokenizer)
    with pytest.raises(GrammarError, match="grammar: cannot be compiled"):
        Grammar.from_lark("start: undefined_rule", tokenizer)


def test_a_tool_whose_schema_cannot_be_compiled(tokenizer):
    bad = {
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string", "not": {"const": ""}}}, "required": ["q"]},
    }
    good = {"name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}
    with pytest.raises(UnsupportedSchemaError, match=r"tool 'lookup' parameters: JSON-schema keyword 'not' at /properties/q/not"):
        tool_call_grammar([good, bad], tokenizer, tool_choice="auto")
    # Forcing the other tool does not compile the bad one.
    assert tool_call_grammar([good, bad], tokenizer, tool_choice="add") is not None
    with pytest.raises(GrammarError, match="tool 'broken' parameters: cannot be compiled"):
        tool_call_grammar([{"name": "broken", "parameters": {"type": "objekt"}}], tokenizer, tool_choice="required")


def test_bad_tools_and_tool_choice(tokenizer):
    tools = [{"name": "add", "parameters": {"type": "object"}}, {"name": "mul", "parameters": {"type": "object"}}]
    with pytest.raises(ConfigError, match=r"tool_choice='div' names no bound tool; bound tools are \['add', 'mul'\]"):
        tool_call_grammar(tools, tokenizer, tool_choice="div")
    with pytest.raises(ConfigError, match="tool_choice must be"):
        tool_call_grammar(tools, tokenizer, tool_choice=3)
    with pytest.raises(ConfigError, match="needs at least one tool"):
        tool_call_grammar([], tokenizer, tool_choice="required")
    with pytest.raises(ConfigError, match="unique names"):
        tool_call_grammar(tools + tools[:1], tokenizer)
    with pytest.raises(ConfigError, match=r"tools\[0\] has no 'name'"):
        tool_call_grammar([{"parameters": {}}], tokenizer)
    with pytest.raises(ConfigError, match="tools must be a list"):
        tool_call_grammar({"name": "add"}, tokenizer)


def test_tokenizers_the_engine_cannot_use(tokenizer):
    class Slow:
        eos_token_id = 0

    with pytest.raises(ConfigError, match="fast .*tokenizer"):
        Grammar.from_regex("a", Slow())

    class NoEos:
        eos_token_id = None
        backend_tokenizer = tokenizer.backend_tokenizer

    with pytest.raises(ConfigError, match="eos_token_ids is required"):
        Grammar.from_regex("a", NoEos())
    with pytest.raises(ConfigError, match="at least one token"):
        Grammar.from_regex("a", tokenizer, eos_token_ids=[])


def test_missing_engine_says_how_to_install(monkeypatch):
    _engine.llguidance.cache_clear()
    monkeypatch.setitem(sys.modules, "llguidance", None)
    try:
        with pytest.raises(ImportError, match=r"pip install 'ggro-integrations\[tools\]'"):
            _engine.llguidance()
    finally:
        monkeypatch.undo()
        _engine.llguidance.cache_clear()


def test_the_package_imports_without_the_engine():
    code = (
        "import sys; sys.modules['llguidance'] = None\n"
        "import ggro_integrations, ggro_integrations.constraints, ggro_integrations.decoding\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
