"""GGRO under a grammar, through the real decoder: schema-valid output for every strategy, nudges that
never leave the grammar, no triggers where the grammar allows one token, tool_choice variants, user
logits processors, and clear errors for what cannot be constrained."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch
from grammar_loop import hermes_calls
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_constraints_json import PERSON

from ggro_integrations import ConfigError, GGRODecoder
from ggro_integrations.constraints import Grammar, LogitsHooks
from ggro_integrations.errors import UnsupportedSchemaError
from ggro_integrations.rewards import EmbeddingReward, HFRewardModel
from ggro_integrations.testing import tiny_reward_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Low threshold: many triggers inside the constrained span, so nudges are exercised there.
KNOBS = {"entropy_threshold": 0.5, "min_segment_tokens": 2, "num_refinements": 3, "nudge_top_k": 5, "max_new_tokens": 200}
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
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a word up.",
        "parameters": {
            "type": "object",
            "properties": {"word": {"type": "string", "maxLength": 10}, "lang": {"enum": ["en", "fr"]}},
            "required": ["word"],
        },
    },
}


@pytest.fixture(scope="module")
def decoder(smol_tokenizer, smol_tiny_lm):
    import copy

    from ggro_integrations.tools import CHATML_TOOLS_TEMPLATE

    tokenizer = copy.copy(smol_tokenizer)
    tokenizer.chat_template = CHATML_TOOLS_TEMPLATE
    reward = HFRewardModel(tiny_reward_model(tokenizer, seed=4), tokenizer, name="tiny-smol-rm")
    return GGRODecoder(smol_tiny_lm, tokenizer, reward, **KNOBS)


def _replay_allowed_counts(decoder, grammar, token_ids):
    """Independently replay the grammar over a response: how many tokens it allowed at each position."""
    hooks = LogitsHooks(grammar)
    counts = []
    for token in token_ids:
        counts.append(hooks.state.allowed_count())
        hooks.advance(token)
    return counts


@pytest.mark.parametrize(
    "strategy,knobs",
    [("greedy", {}), ("ggro", {"refinement": "sequential"}), ("ggro", {"refinement": "parallel"}), ("best_of_n", {"best_of_n": 3})],
)
def test_every_strategy_writes_schema_valid_json(decoder, strategy, knobs):
    result = decoder.generate("Describe a user.", grammar=PERSON, strategy=strategy, **knobs)
    assert result.finish_reason == "eos", f"{result.finish_reason}: {result.text!r}"
    jsonschema.validate(json.loads(result.text), PERSON)
    if strategy == "ggro":
        assert result.interventions, "the threshold must reach triggers inside the schema"
        assert all(e.constrained for e in result.interventions)


def test_ggro_nudges_inside_the_schema_and_stays_valid(smol_tokenizer, smol_tiny_lm):
    decoder = GGRODecoder(smol_tiny_lm, smol_tokenizer, None, **KNOBS)
    # A planted reward: the tokens spelling "admin" score +1, so the reward wants that enum value,
    # which greedy does not pick; GGRO can only get it by nudging among the allowed tokens.
    call = decoder.prepare("Describe a user.", grammar=PERSON, strategy="greedy")
    greedy = json.loads(decoder.generate(call).text)
    assert greedy["role"] != "admin"
    table = torch.zeros(len(smol_tokenizer), 1)
    for token in set(smol_tokenizer.encode('"admin"', add_special_tokens=False)) - set(
        smol_tokenizer.encode('"', add_special_tokens=False)
    ):
        table[token, 0] = 1.0
    planted = EmbeddingReward(lambda e, m: (e[..., 0] * m).sum(-1), table, smol_tokenizer, name="likes-admin")
    result = decoder.generate("Describe a user.", grammar=PERSON, reward_model=planted, nudge_top_k=10)
    data = json.loads(result.text)
    jsonschema.validate(data, PERSON)
    assert data["role"] == "admin" and any(e.accepted for e in result.interventions)
    counts = _replay_allowed_counts(decoder, call.grammar, result.token_ids)
    for event in result.interventions:
        # Every candidate tried was allowed where it was tried (a nudge never leaves the grammar) ...
        hooks = LogitsHooks(call.grammar)
        for token in result.token_ids[: event.position]:
            hooks.advance(token)
        allowed = hooks.state.allowed(len(smol_tokenizer))
        assert all(bool(allowed[c.token_id]) for c in event.candidates)
        # ... and no trigger sits where the grammar left a single token.
        assert counts[event.position] > 1


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**16),
    threshold=st.sampled_from([0.0, 0.3, 1.0]),
    refinement=st.sampled_from(["sequential", "parallel"]),
    scoring=st.sampled_from(["gradient", "exact"]),
    temperature=st.sampled_from([0.0, 1.0]),
)
def test_property_no_nudge_ever_breaks_the_json(decoder, seed, threshold, refinement, scoring, temperature):
    result = decoder.generate(
        "Describe a user.",
        grammar=PERSON,
        seed=seed,
        entropy_threshold=threshold,
        min_segment_tokens=1,
        refinement=refinement,
        nudge_scoring=scoring,
        temperature=temperature,
        max_new_tokens=250,
    )
    if result.finish_reason == "eos":
        jsonschema.validate(json.loads(result.text), PERSON)
    else:  # out of budget: still a valid prefix the grammar accepts token by token
        LogitsHooks(decoder.prepare("x", grammar=PERSON).grammar)  # compiles
        counts = _replay_allowed_counts(decoder, decoder.prepare("x", grammar=PERSON).grammar, result.token_ids)
        assert len(counts) == len(result.token_ids)
    if threshold == 0.0:
        counts = _replay_allowed_counts(decoder, decoder.prepare("x", grammar=PERSON).grammar, result.token_ids)
        assert all(counts[e.position] > 1 for e in result.interventions)


@pytest.mark.parametrize("refinement", ["sequential", "parallel"])
def test_tool_choice_required_always_calls_a_bound_tool(decoder, refinement):
    result = decoder.generate("What is 2 plus 3?", tools=[ADD, LOOKUP], tool_choice="required", refinement=refinement)
    head, calls = hermes_calls(result.text)
    assert head.strip() == "" and len(calls) == 1  # parallel_tool_calls defaults to False
    call = calls[0]
    assert call["name"] in ("add", "lookup")
    schema = (ADD if call["name"] == "add" else LOOKUP)["function"]["parameters"]
    jsonschema.validate(call["arguments"], schema)


def test_named_tool_choice_calls_that_tool(decoder):
    result = decoder.generate("Define 'chat'.", tools=[ADD, LOOKUP], tool_choice="lookup")
    _, calls = hermes_calls(result.text)
    assert [c["name"] for c in calls] == ["lookup"]
    jsonschema.validate(calls[0]["arguments"], LOOKUP["function"]["parameters"])


def test_tool_choice_none_never_opens_a_call(decoder):
    for seed in range(3):
        result = decoder.generate("What is 2 plus 3?", tools=[ADD], tool_choice="none", seed=seed, temperature=1.0, max_new_tokens=40)
        assert "<tool_call>" not in result.text


def test_parallel_calls_are_opt_in(decoder):
    result = decoder.generate("Add twice.", tools=[ADD], tool_choice="required", parallel_tool_calls=True, max_new_tokens=280)
    _, calls = hermes_calls(result.text)
    assert calls and all(c["name"] == "add" for c in calls)


def test_user_logits_processors_compose_with_ggro(decoder, smol_tokenizer):
    from transformers import SuppressTokensLogitsProcessor

    free = decoder.generate("Tell me a story.", strategy="greedy", max_new_tokens=20)
    banned = free.token_ids[:3]
    processor = SuppressTokensLogitsProcessor(banned, device="cpu")
    result = decoder.generate("Tell me a story.", logits_processors=[processor], max_new_tokens=20)
    assert not set(banned) & set(result.token_ids)
    assert all(c.token_id not in banned for e in result.interventions for c in e.candidates)


def test_unsupported_schema_fails_before_decoding(decoder):
    with pytest.raises(UnsupportedSchemaError, match="uniqueItems"):
        decoder.prepare("x", grammar={"type": "array", "items": {"type": "string"}, "uniqueItems": True})


def test_tool_choice_and_grammar_misuse_is_explained(decoder):
    with pytest.raises(ConfigError, match="needs tools"):
        decoder.prepare("x", tool_choice="required")
    with pytest.raises(ConfigError, match="not both"):
        decoder.prepare("x", tools=[ADD], grammar=PERSON)
    with pytest.raises(ConfigError, match="grammar must be"):
        decoder.prepare("x", grammar="not a schema")
    with pytest.raises(ConfigError, match="names no bound tool"):
        decoder.prepare("x", tools=[ADD], tool_choice="subtract")


def test_a_prebuilt_grammar_object_is_used_as_is(decoder, smol_tokenizer):
    digits = Grammar.from_regex(r"[0-9]{3}", smol_tokenizer, eos_token_ids=sorted(decoder.eos_ids))
    result = decoder.generate("A number?", grammar=digits)
    assert result.text.isdigit() and len(result.text) == 3
