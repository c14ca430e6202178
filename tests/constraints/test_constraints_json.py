"""JSON-schema grammars on SmolLM2's real vocabulary: every output a random policy produces under the
mask parses and validates; any allowed token keeps the output completable (property test), forks
included; the state API (advance, fork, rollback, forced tokens, EOS)."""

from __future__ import annotations

import copy
import json
import re

import jsonschema
import pytest
import torch
from grammar_loop import chat_prompt, drive, generate, sampler, text_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggro_integrations.constraints import Grammar, LogitsHooks
from ggro_integrations.errors import ConfigError, GrammarViolationError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Every string, array and number is bounded so that any path through the grammar ends within a few
# hundred tokens: a random policy must then finish, and a failure to finish is a grammar bug.
ADDRESS = {
    "type": "object",
    "properties": {
        "street": {"type": "string", "maxLength": 12},
        "city": {"type": "string", "minLength": 1, "maxLength": 10},
        "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
    },
    "required": ["city"],
}
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "editor", "viewer"]},
        "active": {"type": "boolean"},
        "address": ADDRESS,  # nested object
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "scores": {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 5}, "minItems": 1, "maxItems": 4},
        "nickname": {"type": ["string", "null"], "maxLength": 8},  # optional and nullable
    },
    "required": ["name", "role", "scores"],
}
TOOL_ARGS = {
    "$defs": {
        "Range": {
            "type": "object",
            "properties": {"low": {"type": "integer", "minimum": 0, "maximum": 99}, "high": {"type": "integer", "minimum": 0, "maximum": 99}},
            "required": ["low", "high"],
        }
    },
    "type": "object",
    "properties": {
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "range": {"$ref": "#/$defs/Range"},
        "when": {"anyOf": [{"const": "now"}, {"type": "integer", "minimum": 1, "maximum": 7}]},
    },
    "required": ["unit"],
}
SCHEMAS = {"person": PERSON, "address": ADDRESS, "tool_args": TOOL_ARGS}


def validate(tokenizer, ids, schema):
    value = json.loads(text_of(tokenizer, ids))
    jsonschema.validate(value, schema)
    return value


def strict(schema):
    """What strict=True (the default) enforces on top of the schema: no undeclared keys."""
    from ggro_integrations.constraints import strict_objects

    return strict_objects(copy.deepcopy(schema))


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@pytest.mark.parametrize("mode", ["greedy", "sampled"])
def test_random_policy_output_always_validates(smol_tokenizer, smol_tiny_lm, name, mode):
    schema = SCHEMAS[name]
    grammar = Grammar.from_json_schema(schema, smol_tokenizer)
    prompt = chat_prompt(smol_tokenizer, "JSON please")
    seeds = [0] if mode == "greedy" else [1, 2, 3]
    for seed in seeds:
        pick = None if mode == "greedy" else sampler(seed)
        ids, ended = generate(smol_tiny_lm, LogitsHooks(grammar), prompt, [smol_tokenizer.eos_token_id], pick=pick)
        assert ended, f"no EOS within the budget: {text_of(smol_tokenizer, ids)!r}"
        validate(smol_tokenizer, ids, strict(schema))


def test_optional_fields_are_optional_and_enums_closed(smol_tokenizer):
    grammar = Grammar.from_json_schema(PERSON, smol_tokenizer)
    seen_keys: set[str] = set()
    roles: set[str] = set()
    for seed in range(12):
        ids, ended = drive(grammar.start(), [seed % 3, 1, 2, 0, 1], seed=seed)
        assert ended
        value = validate(smol_tokenizer, ids, strict(PERSON))
        seen_keys |= set(value)
        roles.add(value["role"])
    assert roles <= {"admin", "editor", "viewer"}
    # Some outputs leave optional fields out and the required ones are always there.
    assert {"name", "role", "scores"} <= seen_keys


def test_separators_match_the_tool_template_and_can_be_changed(smol_tokenizer):
    schema = {"type": "object", "properties": {"a": {"const": 1}, "b": {"const": [1, 2]}}, "required": ["a", "b"]}
    default, _ = drive(Grammar.from_json_schema(schema, smol_tokenizer).start(), [], seed=0)
    assert text_of(smol_tokenizer, default) == '{"a": 1, "b": [1, 2]}'
    compact, _ = drive(Grammar.from_json_schema(schema, smol_tokenizer, separators=(",", ":")).start(), [], seed=0)
    assert text_of(smol_tokenizer, compact) == '{"a":1,"b":[1,2]}'


def test_strict_closes_declared_objects_unless_disabled(smol_tokenizer):
    schema = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["a"]}
    extra = smol_tokenizer.encode('{"a": 1, "zz": 2}', add_special_tokens=False)
    closed = Grammar.from_json_schema(schema, smol_tokenizer).start()
    with pytest.raises(GrammarViolationError):
        closed.advance_many(extra)
    open_ = Grammar.from_json_schema(schema, smol_tokenizer, strict=False).start()
    open_.advance_many(extra)
    assert open_.can_end()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(sorted(SCHEMAS)),
    seed=st.integers(0, 2**31 - 1),
    choices=st.lists(st.integers(0, 7), max_size=120),
    fork_at=st.integers(0, 80),
    twin_choices=st.lists(st.integers(0, 7), max_size=120),
)
def test_any_allowed_top_k_token_keeps_the_json_completable(smol_tokenizer, name, seed, choices, fork_at, twin_choices):
    """A GGRO nudge is some token from the allowed top-K: whichever one is taken at every step, and
    whichever branch a fork takes, the output still ends (EOS) and validates."""
    schema = SCHEMAS[name]
    grammar = Grammar.from_json_schema(schema, smol_tokenizer)
    hooks = LogitsHooks(grammar)
    prefix, ended = drive(hooks, choices[:fork_at], seed=seed, max_steps=fork_at) if fork_at else ([], False)
    if ended:  # the output ended before the fork point
        validate(smol_tokenizer, prefix, strict(schema))
        return
    twin = hooks.fork()
    rest, ended = drive(hooks, choices[fork_at:], seed=seed + 1)
    assert ended
    validate(smol_tokenizer, prefix + rest, strict(schema))
    # The twin was unaffected by the original's continuation and completes on its own.
    twin_rest, twin_ended = drive(twin, twin_choices, seed=seed + 2)
    assert twin_ended
    validate(smol_tokenizer, prefix + twin_rest, strict(schema))


def test_fork_is_independent_and_rollback_restores(smol_tokenizer):
    grammar = Grammar.from_json_schema(PERSON, smol_tokenizer)
    state = grammar.start()
    ids = smol_tokenizer.encode('{"name": "Ada", "role": "', add_special_tokens=False)
    state.advance_many(ids)
    before = state.allowed().clone()
    twin = state.fork()
    twin.advance_many(smol_tokenizer.encode('admin", "scores": [1', add_special_tokens=False))
    assert torch.equal(state.allowed(), before) and not torch.equal(twin.allowed(), before)
    assert twin.tokens_consumed > state.tokens_consumed == len(ids)
    # Rollback undoes tokens exactly.
    twin.rollback(twin.tokens_consumed - len(ids))
    assert torch.equal(twin.allowed(), before)
    with pytest.raises(ConfigError, match="tokens_consumed"):
        twin.rollback(twin.tokens_consumed + 1)


def test_a_disallowed_token_raises_and_leaves_the_state_usable(smol_tokenizer):
    state = Grammar.from_json_schema({"enum": ["yes", "no"]}, smol_tokenizer).start()
    before = state.allowed().clone()
    bad = smol_tokenizer.encode("maybe", add_special_tokens=False)[0]
    with pytest.raises(GrammarViolationError, match=f"token {bad} is not allowed"):
        state.advance(bad)
    assert torch.equal(state.allowed(), before) and state.tokens_consumed == 0
    state.advance_many(smol_tokenizer.encode('"no"', add_special_tokens=False))
    assert state.can_end()


def test_forced_tokens_and_single_allowed_token(smol_tokenizer):
    schema = {"type": "object", "properties": {"kind": {"const": "weather"}, "n": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["kind", "n"]}
    state = Grammar.from_json_schema(schema, smol_tokenizer).start()
    forced = state.forced_tokens()
    assert smol_tokenizer.decode(forced) == '{"kind": "weather", "n": '
    # While the text is forced, exactly one token is allowed: the canonical one (never a trigger).
    for token in forced:
        assert state.allowed_count() == 1 and state.forced_token() == token
        state.advance(token)
    digits = {smol_tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}
    assert state.forced_token() is None and digits <= set(state.allowed().nonzero().flatten().tolist())
    state.advance(smol_tokenizer.convert_tokens_to_ids("7"))
    # Then only "}" and, after it, only EOS.
    state.advance(state.forced_token())
    assert state.is_finished() and state.can_end()
    assert state.forced_token() == smol_tokenizer.eos_token_id
    state.advance(smol_tokenizer.eos_token_id)


def test_eos_is_allowed_exactly_when_the_value_is_complete(smol_tokenizer):
    eos = smol_tokenizer.eos_token_id
    state = Grammar.from_json_schema({"type": "integer", "minimum": 0, "maximum": 500}, smol_tokenizer).start()
    assert not state.allowed()[eos] and not state.can_end()
    state.advance(smol_tokenizer.convert_tokens_to_ids("4"))
    assert state.allowed()[eos] and state.can_end() and not state.is_finished()  # "4" or "4x"
    with pytest.raises(GrammarViolationError):
        state.fork().advance_many(smol_tokenizer.encode("999", add_special_tokens=False))  # 4999 > 500


def test_masks_fit_the_logits_width(smol_tokenizer):
    state = Grammar.from_json_schema({"type": "boolean"}, smol_tokenizer).start()
    wide = state.allowed(len(smol_tokenizer) + 64)
    assert wide.shape == (len(smol_tokenizer) + 64,) and not wide[len(smol_tokenizer):].any()
    scores = torch.zeros(1, len(smol_tokenizer) + 64)
    state.mask_(scores)
    allowed = torch.isfinite(scores[0]).nonzero().flatten().tolist()
    assert allowed and all("true".startswith(smol_tokenizer.decode([t])) or "false".startswith(smol_tokenizer.decode([t])) for t in allowed)
    assert torch.equal(torch.isfinite(scores[0]), wide)


def test_grammars_are_cached_per_tokenizer_and_shared_by_copies(smol_tokenizer):
    first = Grammar.from_json_schema(ADDRESS, smol_tokenizer)
    assert Grammar.from_json_schema(json.dumps(ADDRESS), smol_tokenizer) is first  # same schema as a string
    # with_tool_template copies the tokenizer to change its chat template: same vocabulary, same grammar.
    assert Grammar.from_json_schema(ADDRESS, copy.copy(smol_tokenizer)) is first
    assert Grammar.from_json_schema(ADDRESS, smol_tokenizer, separators=(",", ":")) is not first


def test_pydantic_models_are_schemas(smol_tokenizer):
    pydantic = pytest.importorskip("pydantic")

    class Pet(pydantic.BaseModel):
        kind: str = pydantic.Field(pattern="^(cat|dog)$")
        legs: int = pydantic.Field(ge=0, le=4)

    ids, ended = drive(Grammar.from_json_schema(Pet, smol_tokenizer).start(), [1, 0, 2], seed=5)
    assert ended
    Pet.model_validate_json(text_of(smol_tokenizer, ids))


def test_regex_and_lark_grammars(smol_tokenizer, smol_tiny_lm):
    prompt = smol_tokenizer.encode("Answer:", add_special_tokens=False)
    eos = [smol_tokenizer.eos_token_id]
    regex = Grammar.from_regex(r"(yes|no), [0-9]{2}", smol_tokenizer)
    ids, ended = generate(smol_tiny_lm, LogitsHooks(regex), prompt, eos, pick=sampler(4))
    assert ended and re.fullmatch(r"(yes|no), [0-9]{2}", text_of(smol_tokenizer, ids))
    lark = Grammar.from_lark('start: "Result: " %json {"type": "integer", "minimum": 1, "maximum": 3}', smol_tokenizer)
    ids, ended = generate(smol_tiny_lm, LogitsHooks(lark), prompt, eos)
    assert ended and text_of(smol_tokenizer, ids) in {"Result: 1", "Result: 2", "Result: 3"}


def test_tiny_test_tokenizer_works_too(tokenizer, policy):
    grammar = Grammar.from_json_schema(ADDRESS, tokenizer)
    ids, ended = generate(policy, LogitsHooks(grammar), tokenizer.encode("x"), [tokenizer.eos_token_id], pick=sampler(0))
    assert ended
    validate(tokenizer, ids, strict(ADDRESS))


def test_ref_and_anyof_branches_complete_and_validate(smol_tokenizer):
    grammar = Grammar.from_json_schema(TOOL_ARGS, smol_tokenizer)
    for prefix in ('{"unit": "fahrenheit", "range": {"low": 1', '{"unit": "celsius", "when": 3', '{"unit": "celsius", "when": "'):
        state = grammar.start()
        state.advance_many(smol_tokenizer.encode(prefix, add_special_tokens=False))
        ids, ended = drive(state, [3, 1, 4, 1, 5], seed=len(prefix))
        assert ended
        text = prefix + text_of(smol_tokenizer, ids)
        jsonschema.validate(json.loads(text), strict(TOOL_ARGS))
