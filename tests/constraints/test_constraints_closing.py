"""The budget closer: a constrained output ends valid before max_new_tokens, even from a random policy."""

from __future__ import annotations

import json

import jsonschema
import pytest

from ggro_integrations import GGRODecoder
from ggro_integrations.constraints import tool_call_grammar
from ggro_integrations.constraints.closing import closing_path, preference_order

pytestmark = pytest.mark.usefixtures("one_torch_thread")

UNBOUNDED = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "notes": {"type": "array", "items": {"type": "string"}},
        "extra": {"type": "object", "properties": {"why": {"type": "string"}}},
    },
    "required": ["title", "notes"],
}


@pytest.mark.parametrize("strategy", ["greedy", "ggro"])
def test_a_random_policy_closes_unbounded_strings_within_budget(smol_tokenizer, smol_tiny_lm, strategy):
    decoder = GGRODecoder(smol_tiny_lm, smol_tokenizer, None, entropy_threshold=0.5, num_refinements=0)
    result = decoder.generate("Describe it.", grammar=UNBOUNDED, strategy=strategy, max_new_tokens=40)
    assert result.finish_reason == "eos" and len(result.token_ids) <= 40, result.text
    jsonschema.validate(json.loads(result.text), {**UNBOUNDED, "additionalProperties": False})
    assert len(json.loads(result.text)["title"]) > 0  # the policy wrote freely until the budget forced the close


def test_closing_path_leaves_a_string_even_when_it_holds_brackets(smol_tokenizer):
    tool = {"name": "g", "parameters": {"type": "object", "properties": {"s": {"type": "string"}, "n": {"type": "array", "items": {"type": "integer"}}}, "required": ["s", "n"]}}
    grammar = tool_call_grammar([tool], smol_tokenizer, tool_choice="required", parallel_tool_calls=False)
    state = grammar.start()
    state.advance_many(smol_tokenizer.encode('<tool_call>\n{"name": "g", "arguments": {"s": "Arr ]] }', add_special_tokens=False))
    path = closing_path(state, preference_order(smol_tokenizer, grammar.vocab_size), limit=40)
    assert smol_tokenizer.decode(path) == '", "n": []}}\n</tool_call>'  # ]] inside the string is text, not a close
    assert state.tokens_consumed > 0 and not state.can_end()  # the search ran on a fork


def test_nothing_changes_while_the_budget_is_ample(smol_tokenizer, smol_tiny_lm):
    decoder = GGRODecoder(smol_tiny_lm, smol_tokenizer, None, num_refinements=0)
    schema = {"type": "object", "properties": {"level": {"enum": ["low", "high"]}}, "required": ["level"]}
    short = decoder.generate("Rate.", grammar=schema, strategy="greedy", max_new_tokens=12)
    long = decoder.generate("Rate.", grammar=schema, strategy="greedy", max_new_tokens=200)
    assert short.token_ids == long.token_ids and short.finish_reason == "eos"
