"""How often a trigger decided on the top-N entropy estimate agrees with the exact entropy.

Serving engines return only the top-N log-probabilities per position, so the server
backend estimates the entropy (``ggro_integrations.backends.server.entropy``). This
script measures what that costs on real SmolLM2-135M-Instruct outputs:

1. ``collect``: greedy-decode prompts in-process on the converted default checkpoint
   (float32, the GGUF's weights dequantized) and keep, per generated position, the
   exact entropy of the raw-logit softmax and the top-64 log-probabilities.
2. ``evaluate``: for N in {5, 10, 20} and several thresholds, decide ``H >= tau`` on
   each estimator and on the exact entropy; report agreement, false/missed
   triggers and the exact entropies where they disagree, and check that the
   bounds bracket the exact entropy everywhere.
3. ``--server URL`` (a llama-server serving the same GGUF): decode the same prompts
   greedily through the client with ``n_probs = 20`` and compare with the
   in-process run position by position: tokens, top-N log-probabilities, bounds
   and trigger agreement of the server's estimate against the exact in-process
   entropy (this includes the Q4_1 kernels' numerical differences).

    PYTHONPATH=. python benchmarks/topn_entropy.py [--server http://127.0.0.1:8080] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ggro_integrations.backends.server.entropy import ESTIMATORS, entropy_bounds, topn_entropy  # noqa: E402

# More prompts than benchmarks/prompts.jsonl: varied registers give varied entropy profiles.
EXTRA_PROMPTS = [
    "Write a short poem about the sea.",
    "What are the main causes of inflation?",
    "Tell me a story about a dragon who is afraid of fire.",
    "How do I reverse a list in Python?",
    "What should I pack for a weekend camping trip?",
    "Summarise the plot of Romeo and Juliet.",
    "Why is the sky blue?",
    "Suggest a name for a coffee shop.",
]
TAUS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
NS = (5, 10, 20)
TOP_KEPT = 64


def prompts() -> list[str]:
    rows = [json.loads(line)["prompt"] for line in (HERE / "prompts.jsonl").read_text().splitlines() if line.strip()]
    return rows + EXTRA_PROMPTS


def collect(max_new_tokens: int) -> dict[str, Any]:
    import torch

    from ggro_integrations.models import load_policy

    model, tokenizer = load_policy("default", progress=False)
    runs = []
    t0 = time.perf_counter()
    n_tokens = 0
    for text in prompts():
        chat = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
        ids = tokenizer.encode(chat, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                torch.tensor([ids]),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                output_logits=True,  # raw logits, before any logits processor
                return_dict_in_generate=True,
                pad_token_id=tokenizer.pad_token_id,
            )
        generated = out.sequences[0, len(ids):].tolist()
        n_tokens += len(generated)
        positions = []
        for step, logits in enumerate(out.logits):
            logp = torch.log_softmax(logits[0].float(), dim=-1)
            exact = float(-(logp.exp() * logp).sum())
            top = torch.topk(logp, TOP_KEPT)
            positions.append(
                {"token": generated[step], "exact": exact, "top_ids": top.indices.tolist(), "top_logprobs": top.values.tolist()}
            )
        runs.append({"prompt": text, "prompt_ids": ids, "positions": positions})
        print(f"collected {len(runs)}/{len(prompts())}: {len(positions)} positions", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - t0
    return {
        "threads": torch.get_num_threads(),
        "vocab_size": int(model.config.vocab_size),
        "runs": runs,
        "inprocess_tokens": n_tokens,
        "inprocess_seconds": elapsed,
    }


def agreement(pairs: list[tuple[float, float]], tau: float) -> dict[str, Any]:
    """``pairs`` of (exact, estimate): agreement of ``>= tau`` and where they disagree."""
    missed = [e for e, est in pairs if e >= tau and est < tau]
    false = [e for e, est in pairs if e < tau and est >= tau]
    triggers = sum(1 for e, _ in pairs if e >= tau)
    return {
        "positions": len(pairs),
        "exact_triggers": triggers,
        "agree": 1.0 - (len(missed) + len(false)) / max(1, len(pairs)),
        "missed": len(missed),
        "false": len(false),
        "missed_exact_entropies": sorted(round(e, 3) for e in missed),
        "false_exact_entropies": sorted(round(e, 3) for e in false),
    }


def evaluate(data: dict[str, Any]) -> dict[str, Any]:
    vocab = data["vocab_size"]
    positions = [p for run in data["runs"] for p in run["positions"]]
    out: dict[str, Any] = {"positions": len(positions)}
    for n in NS:
        per_n: dict[str, Any] = {}
        bracket_failures = 0
        estimates: dict[str, list[tuple[float, float]]] = {name: [] for name in ESTIMATORS}
        for p in positions:
            lps = p["top_logprobs"][:n]
            lower, upper, _, _ = entropy_bounds([math.exp(x) for x in lps], vocab)
            # float32 softmax rounding: allow 1e-4 nats
            if not (lower - 1e-4 <= p["exact"] <= upper + 1e-4):
                bracket_failures += 1
            for name in ESTIMATORS:
                estimates[name].append((p["exact"], topn_entropy(lps, vocab, name).estimate))
        per_n["bounds_bracket_failures"] = bracket_failures
        per_n["mean_abs_error"] = {
            name: sum(abs(e - est) for e, est in pairs) / len(pairs) for name, pairs in estimates.items()
        }
        per_n["by_tau"] = {
            str(tau): {name: agreement(pairs, tau) for name, pairs in estimates.items()} for tau in TAUS
        }
        out[f"N={n}"] = per_n
    return out


def against_server(data: dict[str, Any], url: str, n: int = 20) -> dict[str, Any]:
    from ggro_integrations.backends.server import CompletionRequest, ServerClient

    vocab = data["vocab_size"]
    report: dict[str, Any] = {"n": n, "prompts": []}
    pairs: dict[str, list[tuple[float, float]]] = {name: [] for name in ESTIMATORS}
    max_abs_diff = 0.0
    bracket_failures = 0
    aligned = 0
    seconds = 0.0
    tokens = 0
    with ServerClient(url, engine="llama.cpp") as client:
        for run in data["runs"]:
            request = CompletionRequest(prompt=run["prompt_ids"], max_tokens=len(run["positions"]), top_logprobs=n)
            t0 = time.perf_counter()
            result = client.complete(request)
            seconds += time.perf_counter() - t0
            tokens += len(result.positions)
            ours = [p["token"] for p in run["positions"]]
            theirs = list(result.token_ids)
            first_diff = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
            report["prompts"].append({"prompt": run["prompt"], "tokens": len(theirs), "first_divergence": first_diff})
            stop = len(theirs) if first_diff is None else first_diff + 1  # the diverging position itself shares the prefix
            for pos, server_pos in zip(run["positions"][:stop], result.positions[:stop]):
                aligned += 1
                exact_lp = dict(zip(pos["top_ids"], pos["top_logprobs"]))
                for cand in server_pos.top:
                    if cand.token_id in exact_lp:
                        max_abs_diff = max(max_abs_diff, abs(cand.logprob - exact_lp[cand.token_id]))
                lps = [c.logprob for c in server_pos.top]
                lower, upper, _, _ = entropy_bounds([math.exp(x) for x in lps], vocab)
                if not (lower - 1e-3 <= pos["exact"] <= upper + 1e-3):
                    bracket_failures += 1
                for name in ESTIMATORS:
                    pairs[name].append((pos["exact"], topn_entropy(lps, vocab, name).estimate))
    report.update(
        aligned_positions=aligned,
        max_abs_logprob_diff=max_abs_diff,
        bounds_bracket_failures=bracket_failures,
        server_tokens=tokens,
        server_seconds=seconds,
        by_tau={str(tau): {name: agreement(p, tau) for name, p in pairs.items()} for tau in TAUS},
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--cache", type=pathlib.Path, default=pathlib.Path("/tmp/ggro_topn_positions.json"),
                        help="where the in-process positions are kept between runs")
    parser.add_argument("--server", help="a llama-server URL serving the embedded default's GGUF")
    parser.add_argument("--start-server", action="store_true",
                        help="start a local llama.cpp server on the embedded default's GGUF (-np 4 -t 2) for the comparison")
    parser.add_argument("--out", type=pathlib.Path, help="write the report here as JSON")
    args = parser.parse_args()
    if args.cache.exists():
        data = json.loads(args.cache.read_text())
    else:
        data = collect(args.max_new_tokens)
        args.cache.write_text(json.dumps(data))
    report = {
        "inprocess_tokens_per_second": data["inprocess_tokens"] / data["inprocess_seconds"],
        "inprocess_threads": data.get("threads"),
        "estimators": evaluate(data),
    }
    if args.start_server:
        from ggro_integrations.backends.server.llama_server import LlamaServerProcess
        from ggro_integrations.models import _find_packaged_gguf

        with LlamaServerProcess(_find_packaged_gguf(), parallel=4, threads=2) as server:
            report["server_kind"] = server.command.kind
            report["server"] = against_server(data, server.url)
        report["server_tokens_per_second"] = report["server"]["server_tokens"] / report["server"]["server_seconds"]
    elif args.server:
        report["server"] = against_server(data, args.server)
        report["server_tokens_per_second"] = report["server"]["server_tokens"] / report["server"]["server_seconds"]
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
