"""Grammar engines for constrained decoding, measured on SmolLM2-135M-Instruct's 49,152-token vocabulary.

    python benchmarks/grammar_engines.py              # all three engines, one run, prints the tables
    python benchmarks/grammar_engines.py --json out.json

Compares ``xgrammar``, ``llguidance`` and ``outlines-core`` (each optional: an engine that does not
import is reported, with the reason, and skipped). For each engine it measures, in the same process:

* tokenizer set-up and cold compile time of a few JSON schemas (a tool call with nested objects,
  enums, arrays and optional fields; a three-tool ``anyOf``; a structured-output record);
* the time to the first mask after compiling (llguidance builds its lexer lazily, so its compile
  time alone would flatter it);
* per-token cost while walking realistic JSON outputs token by token: filling the engine's
  allowed-token bitmask, unpacking it and masking a float32 logits row (the package's code, the
  same for every engine, so only the engine's own work differs), and advancing the state;
* the same over a Hermes ``auto`` tool call (free text, then ``<tool_call>`` switches to the
  schema) where the engine can express it;
* fork (an independent copy of a mid-output state, checked for independence) and rollback;
* one unconstrained SmolLM2 decoding step (single row, KV cache) to express the overhead as a ratio;
* the package's own per-token path (``LogitsHooks``) over llguidance, as the decoder will call it;
* JSON-schema feature coverage: for each feature a schema, one valid and one invalid instance;
  "enforced" means the valid one is accepted and the invalid one rejected, "IGNORED" that the
  invalid one is accepted (the feature is silently dropped), otherwise the compile error.

The decoding loop runs one row at a time on the CPU threads torch is given (``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ggro_integrations.constraints.grammar import bias_from_bits, unpack_bitmask
from ggro_integrations.kv_cache import cache_kwargs, new_cache

# ----------------------------------------------------------------------------------------------
# Schemas and realistic outputs (serialised as the ChatML tool template renders calls: ", " / ": ")

WEATHER_ARGS = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "City and country"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "include": {"type": "array", "items": {"type": "string", "enum": ["humidity", "wind", "uv", "rain"]}},
        "options": {
            "type": "object",
            "properties": {"hourly": {"type": "boolean"}, "language": {"type": "string"}},
            "required": ["hourly"],
            "additionalProperties": False,
        },
    },
    "required": ["location", "unit"],
    "additionalProperties": False,
}


def call_schema(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": args},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


SEARCH_ARGS = {
    "type": "object",
    "properties": {"query": {"type": "string"}, "max_results": {"type": "integer", "minimum": 1, "maximum": 50}},
    "required": ["query"],
    "additionalProperties": False,
}
ADD_ARGS = {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}
RECORD = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "year": {"type": "integer"},
        "rating": {"type": "number"},
        "genres": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "director": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "born": {"type": ["integer", "null"]}},
            "required": ["name"],
            "additionalProperties": False,
        },
        "sequel": {"type": "boolean"},
    },
    "required": ["title", "year", "genres", "director"],
    "additionalProperties": False,
}

SCHEMAS: dict[str, tuple[dict[str, Any], list[Any]]] = {
    "tool_call": (
        call_schema("get_weather", WEATHER_ARGS),
        [
            {"name": "get_weather", "arguments": {"location": "Paris, France", "unit": "celsius"}},
            {
                "name": "get_weather",
                "arguments": {
                    "location": "San Francisco, CA",
                    "unit": "fahrenheit",
                    "days": 3,
                    "include": ["humidity", "wind"],
                    "options": {"hourly": True, "language": "en"},
                },
            },
            {"name": "get_weather", "arguments": {"location": "Tokyo", "unit": "celsius", "days": 7, "include": []}},
        ],
    ),
    "three_tools_anyOf": (
        {
            "anyOf": [
                call_schema("get_weather", WEATHER_ARGS),
                call_schema("web_search", SEARCH_ARGS),
                call_schema("add", ADD_ARGS),
            ]
        },
        [
            {"name": "web_search", "arguments": {"query": "population of Lyon 2024", "max_results": 5}},
            {"name": "add", "arguments": {"a": 2.5, "b": -3}},
            {"name": "get_weather", "arguments": {"location": "Oslo", "unit": "celsius", "days": 2}},
        ],
    ),
    "record": (
        RECORD,
        [
            {
                "title": "The Matrix",
                "year": 1999,
                "rating": 8.7,
                "genres": ["action", "science fiction"],
                "director": {"name": "Lana Wachowski", "born": 1965},
                "sequel": False,
            },
            {"title": "Spirited Away", "year": 2001, "genres": ["animation"], "director": {"name": "Hayao Miyazaki"}},
        ],
    ),
}

AUTO_TEXT = [
    "I will look up the weather in Paris for you.\n<tool_call>\n"
    + json.dumps(SCHEMAS["tool_call"][1][0])
    + "\n</tool_call>",
    "Paris is the capital of France; it has about two million inhabitants and mild weather in spring.",
]

NO_INVALID = object()  # no instance can break an unknown format: only whether it compiles is measured

# (feature, schema, valid instance, invalid instance)
FEATURES: list[tuple[str, dict[str, Any], Any, Any]] = [
    ("enum", {"enum": ["red", "green"]}, "red", "blue"),
    ("const", {"const": "x"}, "x", "y"),
    ("required / optional", {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                             "required": ["a"], "additionalProperties": False}, {"a": 1}, {"b": 1}),
    ("additionalProperties: false", {"type": "object", "properties": {"a": {"type": "integer"}},
                                     "additionalProperties": False}, {"a": 1}, {"a": 1, "z": 2}),
    ("additionalProperties: schema", {"type": "object", "additionalProperties": {"type": "integer"}},
     {"k": 1}, {"k": "v"}),
    ("minItems / maxItems", {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2},
     [1, 2], [1, 2, 3]),
    ("prefixItems", {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
     [1, "a"], ["a", 1]),
    ("anyOf", {"anyOf": [{"type": "integer"}, {"type": "string"}]}, "s", True),
    ("oneOf (disjoint)", {"oneOf": [{"type": "integer"}, {"type": "string"}]}, 3, True),
    ("allOf", {"allOf": [{"type": "integer"}, {"minimum": 5}]}, 7, 3),
    ("$ref / $defs", {"$defs": {"p": {"type": "integer"}}, "type": "object", "properties": {"x": {"$ref": "#/$defs/p"}},
                      "required": ["x"]}, {"x": 1}, {"x": "1"}),
    ("recursive $ref", {"$defs": {"n": {"type": "object", "properties": {"kids": {"type": "array",
                                                                                  "items": {"$ref": "#/$defs/n"}}},
                                        "required": ["kids"], "additionalProperties": False}}, "$ref": "#/$defs/n"},
     {"kids": [{"kids": []}]}, {"kids": [{}]}),
    ("type: [string, null]", {"type": ["string", "null"]}, None, 3),
    ("minLength / maxLength", {"type": "string", "minLength": 2, "maxLength": 3}, "abc", "abcd"),
    ("pattern", {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}$"}, "AB12", "ab12"),
    ("format: date", {"type": "string", "format": "date"}, "2024-05-01", "May 1st"),
    ("format: email", {"type": "string", "format": "email"}, "a@b.co", "not an email"),
    ("minimum / maximum", {"type": "integer", "minimum": 1, "maximum": 14}, 14, 15),
    ("exclusiveMinimum", {"type": "number", "exclusiveMinimum": 0}, 0.5, 0),
    ("multipleOf", {"type": "integer", "multipleOf": 5}, 10, 7),
    ("uniqueItems", {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, [1, 2], [1, 1]),
    ("minProperties", {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 1},
     {"a": 1}, {}),
    ("patternProperties", {"type": "object", "patternProperties": {"^x_": {"type": "integer"}},
                           "additionalProperties": False}, {"x_a": 1}, {"y": 1}),
    ("contains", {"type": "array", "items": {"type": "integer"}, "contains": {"const": 3}}, [1, 3], [1, 2]),
    ("not", {"type": "integer", "not": {"const": 3}}, 2, 3),
    ("if / then / else", {"type": "integer", "if": {"minimum": 10}, "then": {"multipleOf": 2}, "else": {}}, 12, 11),
    ("dependentRequired", {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                           "dependentRequired": {"a": ["b"]}}, {"a": 1, "b": 2}, {"a": 1}),
    ("propertyNames", {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"},
                       "additionalProperties": {"type": "integer"}}, {"ab": 1}, {"AB": 1}),
    ("unknown format", {"type": "string", "format": "x-color"}, "red", NO_INVALID),
]


def dumps(value: Any) -> str:
    return json.dumps(value)  # ", " and ": ", as Jinja's tojson renders tool calls in the template


# ----------------------------------------------------------------------------------------------
# Engines: the same small interface over each library


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte <-> printable-character map used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class Engine:
    name = ""
    supports_auto = False

    def setup(self, tokenizer: Any, vocab_size: int) -> None: ...
    def compile_json(self, schema: dict[str, Any]) -> Any: ...
    def compile_auto(self, tool_schema: dict[str, Any]) -> Any: ...
    def new(self, compiled: Any) -> Any: ...
    def fill(self, matcher: Any, bitmask: torch.Tensor) -> None: ...
    def advance(self, matcher: Any, token: int) -> bool: ...
    def fork(self, matcher: Any) -> Any: ...
    def rollback(self, matcher: Any, n: int) -> str: ...
    def accepting(self, matcher: Any) -> bool: ...


class XGrammar(Engine):
    name = "xgrammar"
    supports_auto = True

    def __init__(self) -> None:
        from importlib.metadata import version

        import xgrammar

        self.xgr = xgrammar
        self.version = version("xgrammar")

    def setup(self, tokenizer: Any, vocab_size: int) -> None:
        self.info = self.xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)

    def _compiler(self) -> Any:
        # A fresh compiler with its cache off: every compile below is cold.
        return self.xgr.GrammarCompiler(self.info, cache_enabled=False)

    def compile_json(self, schema: dict[str, Any]) -> Any:
        return self._compiler().compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(", ", ": "))

    def compile_auto(self, tool_schema: dict[str, Any]) -> Any:
        tag = {
            "type": "structural_tag",
            "format": {
                "type": "triggered_tags",
                "triggers": ["<tool_call>"],
                "tags": [
                    {
                        "type": "tag",
                        "begin": "<tool_call>\n",
                        "content": {"type": "json_schema", "json_schema": tool_schema},
                        "end": "\n</tool_call>",
                    }
                ],
            },
        }
        return self._compiler().compile_structural_tag(json.dumps(tag))

    def new(self, compiled: Any) -> Any:
        return self.xgr.GrammarMatcher(compiled)

    def fill(self, matcher: Any, bitmask: torch.Tensor) -> None:
        matcher.fill_next_token_bitmask(bitmask)

    def advance(self, matcher: Any, token: int) -> bool:
        return bool(matcher.accept_token(token))

    def fork(self, matcher: Any) -> Any:
        return matcher.fork()

    def rollback(self, matcher: Any, n: int) -> str:
        matcher.rollback(n)
        return "yes, unlimited"

    def accepting(self, matcher: Any) -> bool:
        return bool(matcher.is_completed())


class LLGuidance(Engine):
    name = "llguidance"
    supports_auto = True

    def __init__(self) -> None:
        import llguidance
        import llguidance.hf

        self.llg = llguidance
        self.version = llguidance.__version__

    def setup(self, tokenizer: Any, vocab_size: int) -> None:
        self.tok = self.llg.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)

    def _checked(self, grammar: str) -> str:
        is_error, messages = self.llg.LLMatcher.validate_grammar_with_warnings(grammar, self.tok)
        if is_error:
            raise ValueError(messages[0])
        return grammar

    def compile_json(self, schema: dict[str, Any]) -> Any:
        schema = {**schema, "x-guidance": {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}}
        return self._checked(self.llg.LLMatcher.grammar_from_json_schema(schema))

    def compile_auto(self, tool_schema: dict[str, Any]) -> Any:
        schema = {
            **tool_schema,
            "x-guidance": {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "},
        }
        # Free text until the first "<tool_call>" (a lazy lexeme ends at the first match), then the schema.
        lark = (
            "start: TEXT | head body\n"
            'head[lazy]: TEXT "<tool_call>"\n'
            "TEXT: /(.|\\n)*/\n"
            f'body: "\\n" %json {json.dumps(schema)} "\\n</tool_call>"\n'
        )
        return self._checked(self.llg.LLMatcher.grammar_from_lark(lark))

    def new(self, compiled: Any) -> Any:
        matcher = self.llg.LLMatcher(self.tok, compiled, log_level=0)  # errors are read below, not logged
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return matcher

    def fill(self, matcher: Any, bitmask: torch.Tensor) -> None:
        matcher.unsafe_compute_mask_ptr(bitmask.data_ptr(), bitmask.numel() * 4)

    def advance(self, matcher: Any, token: int) -> bool:
        return bool(matcher.consume_token(token))

    def fork(self, matcher: Any) -> Any:
        return matcher.deep_copy()

    def rollback(self, matcher: Any, n: int) -> str:
        return "yes" if matcher.rollback(n) else "failed"

    def accepting(self, matcher: Any) -> bool:
        return bool(matcher.is_accepting())


class OutlinesCore(Engine):
    name = "outlines-core"
    supports_auto = False  # regex automata: no lazy "text until <tool_call>" without lookahead

    def __init__(self) -> None:
        import outlines_core
        from outlines_core.json_schema import build_regex_from_schema

        self.oc = outlines_core
        self.to_regex = build_regex_from_schema
        from importlib.metadata import version

        self.version = version("outlines_core")

    def setup(self, tokenizer: Any, vocab_size: int) -> None:
        # outlines-core wants {token bytes: [ids]}; undo byte-level BPE's printable-character map.
        u2b = {c: b for b, c in bytes_to_unicode().items()}
        special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
        vocab: dict[bytes, list[int]] = {}
        for token, idx in tokenizer.get_vocab().items():
            if idx in special or any(c not in u2b for c in token):
                continue
            vocab.setdefault(bytes(u2b[c] for c in token), []).append(idx)
        self.vocab = self.oc.Vocabulary(tokenizer.eos_token_id, vocab)

    def compile_json(self, schema: dict[str, Any]) -> Any:
        return self.oc.Index(self.to_regex(json.dumps(schema)), self.vocab)

    def new(self, compiled: Any) -> Any:
        return self.oc.Guide(compiled)

    def fill(self, matcher: Any, bitmask: torch.Tensor) -> None:
        matcher.write_mask_into(bitmask.data_ptr(), bitmask.numel(), 4)

    def advance(self, matcher: Any, token: int) -> bool:
        try:
            matcher.advance(token, return_tokens=False)
            return True
        except ValueError:
            return False

    def fork(self, matcher: Any) -> Any:
        return copy.copy(matcher)

    def rollback(self, matcher: Any, n: int) -> str:
        matcher.rollback_state(n)
        return f"yes, last {matcher.get_allowed_rollback() + n} states"

    def accepting(self, matcher: Any) -> bool:
        return bool(matcher.is_finished())


ENGINES: list[Callable[[], Engine]] = [XGrammar, LLGuidance, OutlinesCore]

# ----------------------------------------------------------------------------------------------
# Measurement helpers


def apply_mask(logits: torch.Tensor, bitmask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask a logits row from a packed int32 bitmask, the way ggro_integrations.constraints does it
    (unpack the bits, add a 0 / -inf bias); returns (row, allowed bools)."""
    bits, _ = unpack_bitmask(bitmask.numpy(), logits.shape[-1])
    return logits.add_(bias_from_bits(bits)), torch.from_numpy(bits.view(np.bool_))


def ms(ns: float) -> float:
    return ns / 1e6


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def walk(engine: Engine, compiled: Any, token_lists: list[list[int]], vocab_size: int) -> dict[str, Any]:
    """Step through each output: mask, apply, check the token is allowed, advance."""
    fill_t, apply_t, adv_t, allowed_counts = [], [], [], []
    rejected = 0
    bitmask = torch.zeros((vocab_size + 31) // 32, dtype=torch.int32)
    logits = torch.randn(vocab_size)
    for tokens in token_lists:
        matcher = engine.new(compiled)
        for token in tokens:
            t0 = time.perf_counter_ns()
            engine.fill(matcher, bitmask)
            t1 = time.perf_counter_ns()
            row = logits.clone()
            t2 = time.perf_counter_ns()
            _, allowed = apply_mask(row, bitmask)
            t3 = time.perf_counter_ns()
            ok = bool(allowed[token]) and engine.advance(matcher, token)
            t4 = time.perf_counter_ns()
            fill_t.append(t1 - t0)
            apply_t.append(t3 - t2)
            adv_t.append(t4 - t3)
            allowed_counts.append(int(allowed.sum()))
            if not ok:
                rejected += 1
                break
    return {
        "steps": len(fill_t),
        "rejected_outputs": rejected,
        "mask_ms": ms(statistics.mean(fill_t)),
        "mask_p50_ms": ms(statistics.median(fill_t)),
        "mask_p95_ms": ms(p95(fill_t)),
        "apply_ms": ms(statistics.mean(apply_t)),
        "advance_ms": ms(statistics.mean(adv_t)),
        "single_allowed_steps": sum(1 for c in allowed_counts if c == 1),
    }


def fork_check(engine: Engine, compiled: Any, tokens: list[int], vocab_size: int) -> dict[str, Any]:
    """Fork mid-output, advance the copy, check the original's mask did not move; time it."""
    matcher = engine.new(compiled)
    half = len(tokens) // 2
    for token in tokens[:half]:
        engine.advance(matcher, token)
    before = torch.zeros((vocab_size + 31) // 32, dtype=torch.int32)
    engine.fill(matcher, before)
    times = []
    for _ in range(50):
        t0 = time.perf_counter_ns()
        twin = engine.fork(matcher)
        times.append(time.perf_counter_ns() - t0)
    for token in tokens[half:]:
        engine.advance(twin, token)
    after = torch.zeros_like(before)
    engine.fill(matcher, after)
    independent = bool(torch.equal(before, after)) and engine.accepting(twin) and not engine.accepting(matcher)
    # Replay, the alternative to forking: a fresh state fed the prefix.
    t0 = time.perf_counter_ns()
    replay = engine.new(compiled)
    for token in tokens[:half]:
        engine.advance(replay, token)
    replay_ns = time.perf_counter_ns() - t0
    try:
        rb_matcher = engine.new(compiled)
        for token in tokens[:half]:
            engine.advance(rb_matcher, token)
        rollback = engine.rollback(rb_matcher, 3)
        again = torch.zeros_like(before)
        engine.fill(rb_matcher, again)
        for token in tokens[half - 3 : half]:
            engine.advance(rb_matcher, token)
        engine.fill(rb_matcher, again)
        rollback += "" if torch.equal(again, before) else " (state differs after replay!)"
    except Exception as exc:  # noqa: BLE001 - report what the engine says
        rollback = f"no: {type(exc).__name__}: {exc}"[:60]
    return {
        "fork_ms": ms(statistics.median(times)),
        "fork_independent": independent,
        "replay_ms": ms(replay_ns),
        "replay_tokens": half,
        "rollback": rollback,
    }


def check_feature(engine: Engine, tokenizer: Any, schema: dict[str, Any], valid: Any, invalid: Any) -> str:
    try:
        compiled = engine.compile_json(schema)
        engine.new(compiled)
    except Exception as exc:  # noqa: BLE001 - the message is what we measure
        return "error: " + " ".join(str(exc).split())[:90]

    def accepts(value: Any) -> bool:
        matcher = engine.new(compiled)
        for token in tokenizer.encode(dumps(value), add_special_tokens=False):
            if not engine.advance(matcher, token):
                return False
        return engine.accepting(matcher)

    if invalid is NO_INVALID:
        return "compiles (format ignored)" if accepts(valid) else "rejects valid"
    ok_valid, ok_invalid = accepts(valid), accepts(invalid)
    if ok_valid and not ok_invalid:
        return "enforced"
    if ok_invalid:
        return "IGNORED (accepts invalid)"
    return "rejects valid"


def module_overhead(tokenizer: Any, vocab_size: int, outputs: dict[str, list[list[int]]]) -> dict[str, Any]:
    """Per-token cost of what the decoder will call, ``LogitsHooks(grammar)(logits)`` + ``advance``,
    on the same outputs (the package's own path over llguidance: mask, unpack, add the -inf bias)."""
    from ggro_integrations.constraints import Grammar, LogitsHooks, tool_call_grammar

    result: dict[str, Any] = {}
    logits = torch.randn(1, vocab_size)
    cases = {name: (Grammar.from_json_schema(SCHEMAS[name][0], tokenizer), token_lists) for name, token_lists in outputs.items()}
    weather = {"name": "get_weather", "parameters": WEATHER_ARGS}
    cases["auto"] = (
        tool_call_grammar([weather], tokenizer, tool_choice="auto"),
        [tokenizer.encode(text, add_special_tokens=False) for text in AUTO_TEXT],
    )
    for name, (grammar, token_lists) in cases.items():
        hook_t, adv_t, fork_t = [], [], []
        for tokens in token_lists:
            hooks = LogitsHooks(grammar)
            for token in tokens:
                row = logits.clone()
                t0 = time.perf_counter_ns()
                hooks(row)
                t1 = time.perf_counter_ns()
                hooks.advance(token)
                t2 = time.perf_counter_ns()
                hooks.fork()
                t3 = time.perf_counter_ns()
                hook_t.append(t1 - t0)
                adv_t.append(t2 - t1)
                fork_t.append(t3 - t2)
        result[name] = {
            "hooks_ms": ms(statistics.mean(hook_t)),
            "hooks_p50_ms": ms(statistics.median(hook_t)),
            "hooks_p95_ms": ms(p95(hook_t)),
            "advance_ms": ms(statistics.mean(adv_t)),
            "fork_ms": ms(statistics.median(fork_t)),
            "steps": len(hook_t),
        }
    return result


def unconstrained_step(model: Any, tokenizer: Any, steps: int = 40) -> dict[str, float]:
    """Median time of one single-row greedy decoding step with a KV cache (the cost a mask adds to)."""
    messages = [{"role": "user", "content": "What will the weather be like in Paris this weekend?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids = ids["input_ids"]
    times = []
    cache = new_cache(model.config)  # filled in place, as the decoder's segment loop does
    with torch.inference_mode():
        out = model(input_ids=ids, **cache_kwargs(model, cache))
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(steps):
            t0 = time.perf_counter_ns()
            out = model(input_ids=nxt, **cache_kwargs(model, cache))
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            times.append(time.perf_counter_ns() - t0)
    return {"step_ms": ms(statistics.median(times)), "prompt_tokens": ids.shape[1], "steps": steps}


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--repeats", type=int, default=3, help="cold compiles per schema (median reported)")
    args = parser.parse_args(argv)

    from ggro_integrations.models import load_policy

    model, tokenizer = load_policy("default")
    vocab_size = model.config.vocab_size
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"torch threads {torch.get_num_threads()}, python {platform.python_version()}, torch {torch.__version__}, "
        f"load average at start {os.getloadavg()[0]:.1f}",
        "vocab_size": vocab_size,
        "engines": {},
    }
    report["unconstrained"] = unconstrained_step(model, tokenizer)
    outputs = {
        name: [tokenizer.encode(dumps(v), add_special_tokens=False) for v in values]
        for name, (_, values) in SCHEMAS.items()
    }
    auto_tokens = [tokenizer.encode(text, add_special_tokens=False) for text in AUTO_TEXT]

    for factory in ENGINES:
        name = factory.name
        try:
            t0 = time.perf_counter()
            engine = factory()
            import_s = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - report exactly why an engine is missing
            report["engines"][name] = {"unavailable": f"{type(exc).__name__}: {exc}"}
            continue
        t0 = time.perf_counter()
        engine.setup(tokenizer, vocab_size)
        entry: dict[str, Any] = {
            "version": engine.version,
            "import_s": import_s,
            "tokenizer_setup_s": time.perf_counter() - t0,
            "schemas": {},
        }
        for sname, (schema, _) in SCHEMAS.items():
            compile_times, first_mask = [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter_ns()
                compiled = engine.compile_json(schema)
                t1 = time.perf_counter_ns()
                matcher = engine.new(compiled)
                engine.fill(matcher, torch.zeros((vocab_size + 31) // 32, dtype=torch.int32))
                t2 = time.perf_counter_ns()
                compile_times.append(t1 - t0)
                first_mask.append(t2 - t1)
            result = {
                "compile_ms": ms(statistics.median(compile_times)),
                "first_mask_ms": ms(statistics.median(first_mask)),
            }
            result.update(walk(engine, compiled, outputs[sname], vocab_size))
            if sname == "tool_call":
                result.update(fork_check(engine, compiled, outputs[sname][1], vocab_size))
            entry["schemas"][sname] = result
        if engine.supports_auto:
            t0 = time.perf_counter_ns()
            compiled = engine.compile_auto(SCHEMAS["tool_call"][0])
            auto = {"compile_ms": ms(time.perf_counter_ns() - t0)}
            auto.update(walk(engine, compiled, auto_tokens, vocab_size))
            entry["auto"] = auto
        entry["features"] = {f: check_feature(engine, tokenizer, s, v, i) for f, s, v, i in FEATURES}
        report["engines"][name] = entry

    if "llguidance" in report["engines"] and "unavailable" not in report["engines"]["llguidance"]:
        report["module"] = module_overhead(tokenizer, vocab_size, outputs)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def print_report(report: dict[str, Any]) -> None:
    step = report["unconstrained"]["step_ms"]
    print(f"# Grammar engines on SmolLM2-135M-Instruct ({report['vocab_size']} tokens)\n")
    print(f"Machine: {report['machine']}")
    print(
        f"Unconstrained decoding step (1 row, KV cache, prompt {report['unconstrained']['prompt_tokens']} tokens): "
        f"**{step:.1f} ms** (median of {report['unconstrained']['steps']})\n"
    )
    engines = {n: e for n, e in report["engines"].items() if "unavailable" not in e}
    for name, e in report["engines"].items():
        if "unavailable" in e:
            print(f"- {name}: not measured: {e['unavailable']}")
    print("| engine | version | import s | tokenizer setup s |")
    print("|---|---|---|---|")
    for name, e in engines.items():
        print(f"| {name} | {e['version']} | {e['import_s']:.2f} | {e['tokenizer_setup_s']:.2f} |")
    print()
    print("Per schema: cold compile, first mask, then per token over realistic outputs "
          "(mask = engine fills its bitmask; apply = unpack + add a 0/-inf bias to a float32 logits row, the package's code, "
          "the same for every engine; "
          "advance = consume the token). ratio = (mask + apply + advance) / unconstrained step.\n")
    print("| schema | engine | compile ms | first mask ms | mask ms/tok mean (p50, p95) | apply ms | advance ms "
          "| ratio | steps | single-allowed steps |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for sname in SCHEMAS:
        for name, e in engines.items():
            r = e["schemas"][sname]
            total = r["mask_ms"] + r["apply_ms"] + r["advance_ms"]
            bad = f" ({r['rejected_outputs']} outputs rejected!)" if r["rejected_outputs"] else ""
            print(
                f"| {sname} | {name} | {r['compile_ms']:.1f} | {r['first_mask_ms']:.2f} | {r['mask_ms']:.3f} "
                f"({r['mask_p50_ms']:.3f}, {r['mask_p95_ms']:.3f}) | {r['apply_ms']:.3f} | {r['advance_ms']:.3f} | {total / step:.3f} "
                f"| {r['steps']}{bad} | {r['single_allowed_steps']} |"
            )
    print()
    print("Hermes `auto` tool call (free text; `<tool_call>` switches to the schema):\n")
    print("| engine | compile ms | mask ms/tok mean (p50, p95) | apply ms | advance ms | ratio | steps |")
    print("|---|---|---|---|---|---|---|")
    for name, e in engines.items():
        if "auto" not in e:
            print(f"| {name} | not expressible (regex automaton, no lazy trigger) | | | | | |")
            continue
        r = e["auto"]
        total = r["mask_ms"] + r["apply_ms"] + r["advance_ms"]
        bad = f" ({r['rejected_outputs']} rejected!)" if r["rejected_outputs"] else ""
        print(
            f"| {name} | {r['compile_ms']:.1f} | {r['mask_ms']:.3f} ({r['mask_p50_ms']:.3f}, {r['mask_p95_ms']:.3f}) | {r['apply_ms']:.3f} "
            f"| {r['advance_ms']:.3f} | {total / step:.3f} | {r['steps']}{bad} |"
        )
    print()
    print("State copies (tool_call schema, forked halfway through the long output):\n")
    print("| engine | fork ms | fork independent | replay prefix ms (tokens) | rollback |")
    print("|---|---|---|---|---|")
    for name, e in engines.items():
        r = e["schemas"]["tool_call"]
        print(
            f"| {name} | {r['fork_ms']:.4f} | {r['fork_independent']} | {r['replay_ms']:.2f} ({r['replay_tokens']}) "
            f"| {r['rollback']} |"
        )
    print()
    if "module" in report:
        print("The package's own per-token path (`LogitsHooks(grammar)(logits)` = llguidance mask + unpack + "
              "add the -inf bias, then `advance`; `fork` timed once per step), llguidance:\n")
        print("| grammar | hooks ms/tok mean (p50, p95) | advance ms | fork ms | ratio | steps |")
        print("|---|---|---|---|---|---|")
        for name, r in report["module"].items():
            total = r["hooks_ms"] + r["advance_ms"]
            print(f"| {name} | {r['hooks_ms']:.3f} ({r['hooks_p50_ms']:.3f}, {r['hooks_p95_ms']:.3f}) | {r['advance_ms']:.3f} | "
                  f"{r['fork_ms']:.4f} | {total / step:.3f} | {r['steps']} |")
        print()
    print("JSON-schema features (valid instance accepted and invalid rejected = enforced):\n")
    names = list(engines)
    print("| feature | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for feature, *_ in FEATURES:
        print(f"| {feature} | " + " | ".join(engines[n]["features"][feature] for n in names) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
