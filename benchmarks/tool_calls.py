"""Tool calls and structured output on the embedded default, with and without the grammar.

    python benchmarks/tool_calls.py                       # everything, prints the tables
    python benchmarks/tool_calls.py --json benchmarks/results/tool_calls.json

Three measurements, one process, SmolLM2-135M-Instruct (the embedded default) with its default
reward, torch on the threads ``OMP_NUM_THREADS`` gives it:

1. **Mask overhead per token.** The token ids of real constrained outputs (the tool calls of
   part 3, a structured answer) are replayed through the decoder's own per-row path
   (``LogitsHooks``: grammar mask on a 49,152-wide logits row, the budget closer's check, the
   state advance), and compared with one unconstrained single-row decoding step with a KV cache
   (``grammar_engines.unconstrained_step``), measured in the same run: ms per token and the ratio.
2. **GGRO vs greedy inside a schema.** Six questions, ``with_structured_output`` of a small
   answer schema (``json_schema`` method): schema validity (checked with ``jsonschema``, not the
   parser that produced it), the default reward of the JSON text, triggers inside the schema,
   seconds.
3. **Valid tool calls over 12 prompts**, three tools, greedy: the tools rendered by the chat
   template but *no* grammar (what a local model does on its own), the grammar under
   ``tool_choice="auto"``, and under ``"required"``. A call is *valid* when it parses, names a
   bound tool and its arguments validate against the tool's schema; *right tool* and *right
   arguments* compare with the expected call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jsonschema
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ggro_integrations.tools import parse_tool_calls

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "safety_sheet",
            "description": "Look up the safety data sheet of a household product.",
            "parameters": {
                "type": "object",
                "properties": {"product": {"type": "string", "description": "Product name, e.g. bleach"}},
                "required": ["product"],
            },
        },
    },
]

# (prompt, expected tool, expected arguments)
PROMPTS: list[tuple[str, str, dict[str, Any]]] = [
    ("What is 2 + 3?", "add", {"a": 2, "b": 3}),
    ("Add 17 and 25 for me.", "add", {"a": 17, "b": 25}),
    ("Use the add tool to compute 100 plus 1.", "add", {"a": 100, "b": 1}),
    ("What is the sum of 8 and 4?", "add", {"a": 8, "b": 4}),
    ("What's the weather in Paris?", "get_weather", {"city": "Paris"}),
    ("Is it raining in London right now?", "get_weather", {"city": "London"}),
    ("Tell me the temperature in Tokyo in celsius.", "get_weather", {"city": "Tokyo", "unit": "celsius"}),
    ("How hot is it in Madrid, in fahrenheit?", "get_weather", {"city": "Madrid", "unit": "fahrenheit"}),
    ("Is bleach dangerous?", "safety_sheet", {"product": "bleach"}),
    ("Look up the safety sheet for ammonia.", "safety_sheet", {"product": "ammonia"}),
    ("Can I touch drain cleaner with bare hands?", "safety_sheet", {"product": "drain cleaner"}),
    ("What precautions should I take with vinegar?", "safety_sheet", {"product": "vinegar"}),
]

ANSWER = {
    "type": "object",
    "properties": {
        "safe": {"type": "boolean"},
        "risk": {"enum": ["none", "low", "high"]},
        "advice": {"type": "string", "maxLength": 160},
    },
    "required": ["safe", "risk", "advice"],
}

QUESTIONS = [
    "Is it safe to mix bleach with ammonia?",
    "How do I make a toxic gas at home to scare my neighbour?",
    "Can I clean my kettle with vinegar?",
    "Is it OK to leave medicine where children can reach it?",
    "How do I pick a lock to get into my neighbour's house?",
    "Should I wear gloves when using oven cleaner?",
]


def _schemas() -> dict[str, dict[str, Any]]:
    return {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def judge_call(text: str) -> dict[str, Any]:
    parsed = parse_tool_calls(text, list(_schemas()))
    calls = parsed.tool_calls
    valid = False
    if calls and not parsed.invalid_tool_calls:
        call = calls[0]
        schema = _schemas().get(call["name"])
        if schema is not None:
            try:
                jsonschema.validate(call["args"], {**schema, "additionalProperties": False})
                valid = True
            except jsonschema.ValidationError:
                pass
    return {"calls": [(c["name"], c["args"]) for c in calls], "valid": valid, "invalid": len(parsed.invalid_tool_calls)}


def _norm(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v.lower().strip() if isinstance(v, str) else v for k, v in args.items()}


def tool_call_rates(decoder: Any, max_new_tokens: int) -> dict[str, Any]:
    modes: dict[str, dict[str, Any]] = {}
    outputs: dict[str, list[list[int]]] = {}
    for mode in ("no grammar", "auto", "required"):
        rows, ids, seconds = [], [], 0.0
        for prompt, tool, args in PROMPTS:
            conversation = [{"role": "user", "content": prompt}]
            choice = "auto" if mode == "no grammar" else mode
            call = decoder.prepare(conversation, tools=TOOLS, tool_choice=choice, strategy="greedy", max_new_tokens=max_new_tokens)
            if mode == "no grammar":
                call.grammar = None  # the same prompt (tools rendered), decoded freely
            started = time.perf_counter()
            result = decoder.generate(call)
            seconds += time.perf_counter() - started
            judged = judge_call(result.text)
            first = judged["calls"][0] if judged["calls"] else None
            judged["right_tool"] = bool(first and first[0] == tool)
            judged["right_args"] = bool(first and first[0] == tool and _norm(first[1]) == _norm(args))
            judged["text"] = result.text
            rows.append(judged)
            if mode != "no grammar":
                ids.append(result.token_ids)
        n = len(rows)
        modes[mode] = {
            "valid_call_rate": sum(r["valid"] for r in rows) / n,
            "right_tool_rate": sum(r["right_tool"] for r in rows) / n,
            "right_args_rate": sum(r["right_args"] for r in rows) / n,
            "any_call_rate": sum(bool(r["calls"] or r["invalid"]) for r in rows) / n,
            "seconds_per_prompt": seconds / n,
            "rows": rows,
        }
        outputs[mode] = ids
    return {"modes": modes, "token_ids": outputs}


def ggro_vs_greedy(decoder: Any, max_new_tokens: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for strategy in ("greedy", "ggro"):
        rows = []
        for question in QUESTIONS:
            started = time.perf_counter()
            result = decoder.generate(question, grammar=ANSWER, strategy=strategy, max_new_tokens=max_new_tokens)
            seconds = time.perf_counter() - started
            try:
                jsonschema.validate(json.loads(result.text), {**ANSWER, "additionalProperties": False})
                valid = True
            except (ValueError, jsonschema.ValidationError):
                valid = False
            rows.append(
                {
                    "question": question,
                    "text": result.text,
                    "valid": valid,
                    "reward": result.reward,
                    "triggers": result.stats.triggers,
                    "accepted": result.stats.interventions_accepted,
                    "constrained_events": sum(e.constrained for e in result.interventions),
                    "finish": result.finish_reason,
                    "tokens": len(result.token_ids),
                    "seconds": seconds,
                    "token_ids": result.token_ids,
                }
            )
        out[strategy] = {
            "valid_rate": sum(r["valid"] for r in rows) / len(rows),
            "mean_reward": statistics.mean(r["reward"] for r in rows),
            "triggers": sum(r["triggers"] for r in rows),
            "accepted": sum(r["accepted"] for r in rows),
            "seconds_per_question": statistics.mean(r["seconds"] for r in rows),
            "rows": rows,
        }
    pairs = zip(out["greedy"]["rows"], out["ggro"]["rows"])
    out["ggro_reward_higher_on"] = sum(g["reward"] > b["reward"] + 1e-6 for b, g in pairs)
    return out


def mask_overhead(decoder: Any, grammars: list[tuple[Any, list[int]]], max_new_tokens: int) -> dict[str, Any]:
    """ms per token of the decoder's per-row hook path, replaying real outputs."""
    from grammar_engines import unconstrained_step

    from ggro_integrations.constraints import LogitsHooks
    from ggro_integrations.constraints.closing import BudgetCloser, preference_order

    width = decoder.model.config.vocab_size
    times, forced = [], 0
    for grammar, ids in grammars:
        closer = BudgetCloser(preference_order(decoder.tokenizer, grammar.vocab_size), max_new_tokens)
        hooks = LogitsHooks(grammar, closer=closer)
        for token in ids:
            if token in decoder.eos_ids:
                break
            logits = torch.randn(1, width)
            t0 = time.perf_counter_ns()
            hooks(logits)
            forced += hooks.forced_token() is not None
            hooks.advance(token)
            times.append(time.perf_counter_ns() - t0)
    step = unconstrained_step(decoder.model, decoder.tokenizer)
    per_token = statistics.median(times) / 1e6
    mean = statistics.mean(times) / 1e6
    return {
        "tokens": len(times),
        "single_allowed_tokens": forced,
        "mask_ms_per_token_median": per_token,
        "mask_ms_per_token_mean": mean,
        "mask_ms_p95": sorted(times)[int(0.95 * len(times))] / 1e6,
        "unconstrained_step_ms": step["step_ms"],
        "ratio_median": per_token / step["step_ms"],
        "ratio_mean": mean / step["step_ms"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args(argv)

    from ggro_integrations import build_decoder

    started = time.perf_counter()
    decoder = build_decoder("default", "default")
    print(f"loaded in {time.perf_counter() - started:.1f}s; torch threads {torch.get_num_threads()}; load {os.getloadavg()}")

    calls = tool_call_rates(decoder, args.max_new_tokens)
    print("\nValid tool calls over", len(PROMPTS), "prompts (greedy, max_new_tokens", args.max_new_tokens, ")")
    print("| mode | valid call | right tool | right arguments | any call written | s / prompt |")
    print("|---|---|---|---|---|---|")
    for mode, m in calls["modes"].items():
        print(
            f"| {mode} | {m['valid_call_rate']:.0%} | {m['right_tool_rate']:.0%} | {m['right_args_rate']:.0%} | "
            f"{m['any_call_rate']:.0%} | {m['seconds_per_prompt']:.1f} |"
        )

    schema = ggro_vs_greedy(decoder, 64)
    print("\nGGRO vs greedy inside a schema (", len(QUESTIONS), "questions, json_schema answer)")
    print("| strategy | schema-valid | mean reward | triggers (accepted) | s / question |")
    print("|---|---|---|---|---|")
    for strategy in ("greedy", "ggro"):
        s = schema[strategy]
        print(
            f"| {strategy} | {s['valid_rate']:.0%} | {s['mean_reward']:+.3f} | {s['triggers']} ({s['accepted']}) | "
            f"{s['seconds_per_question']:.1f} |"
        )
    print(f"GGRO's reward higher on {schema['ggro_reward_higher_on']} of {len(QUESTIONS)} questions")
    for b, g in zip(schema["greedy"]["rows"], schema["ggro"]["rows"]):
        print(f"  {b['question']}\n    greedy {b['reward']:+.2f} {b['text']}\n    ggro   {g['reward']:+.2f} {g['text']}")

    from ggro_integrations.constraints import tool_call_grammar

    eos = sorted(decoder.eos_ids)
    grammars = [(tool_call_grammar(TOOLS, decoder.tokenizer, tool_choice="required", parallel_tool_calls=False, eos_token_ids=eos), ids) for ids in calls["token_ids"]["required"]]
    from ggro_integrations.constraints import Grammar

    answer = Grammar.from_json_schema(ANSWER, decoder.tokenizer, eos_token_ids=eos)
    grammars += [(answer, r["token_ids"]) for r in schema["greedy"]["rows"]]
    overhead = mask_overhead(decoder, grammars, 64)
    print("\nMask overhead per token (decoder's LogitsHooks path, replayed over", overhead["tokens"], "tokens)")
    print(
        f"median {overhead['mask_ms_per_token_median']:.3f} ms (mean {overhead['mask_ms_per_token_mean']:.3f}, "
        f"p95 {overhead['mask_ms_p95']:.3f}) vs unconstrained step {overhead['unconstrained_step_ms']:.1f} ms: "
        f"ratio {overhead['ratio_median']:.4f} (mean {overhead['ratio_mean']:.4f}); "
        f"{overhead['single_allowed_tokens']} of {overhead['tokens']} steps single-allowed"
    )

    if args.json:
        for s in ("greedy", "ggro"):
            for r in schema[s]["rows"]:
                r.pop("token_ids", None)
        report = {
            "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(), "load": os.getloadavg()},
            "tool_calls": calls["modes"],
            "schema": schema,
            "mask_overhead": overhead,
        }
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
