"""GGRO with the policy on llama-server against GGRO in process, on the same machine, in one run.

Measures, on the embedded default (SmolLM2-135M-Instruct: the packaged Q4_1 GGUF on the
server, its converted float32 checkpoint in process) with the default reward model in
process for both:

1. in-process greedy: wall seconds per generated token (the reference the target is set
   against), and in-process GGRO, the prompts one after another;
2. GGRO over the server with 1, 4 and 16 concurrent generations (asyncio through
   ``AsyncGenerationStream``, the bridge both adapters use): generations (requests) per
   second, wall seconds per generated token, and per-token latency (each generation's
   seconds over its tokens, averaged);
3. per trigger: policy requests, prompt tokens the server re-processed (prefix-cache
   misses) and took from its cache;
4. trigger agreement end to end: along each server GGRO response, the backend's
   estimated entropy against the exact in-process entropy (teacher-forced, same
   positions), at the threshold, with the disagreements' entropies.

    PYTHONPATH=. python benchmarks/server_throughput.py [--prompts 16] [--max-new-tokens 32]
        [--parallel 16] [--threads 1] [--out benchmarks/results/server_throughput.json]

The machine may be shared: the script prints the load average before and after, and the
ratios are only comparable within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import pathlib
import platform
import sys
import tempfile
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

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


def prompts(n: int) -> list[str]:
    rows = [json.loads(line)["prompt"] for line in (HERE / "prompts.jsonl").read_text().splitlines() if line.strip()]
    rows += EXTRA_PROMPTS
    return [rows[i % len(rows)] for i in range(n)]


def load() -> float:
    return os.getloadavg()[0]


def run_sequential(decoder: Any, items: list[str], **options: Any) -> dict[str, Any]:
    started = time.perf_counter()
    results = [decoder.generate(p, **options) for p in items]
    return summarise(results, time.perf_counter() - started)


async def _concurrent(decoder: Any, items: list[str], concurrency: int, options: dict[str, Any]) -> list[Any]:
    from ggro_integrations.decoding.threads import AsyncGenerationStream

    gate = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> Any:
        async with gate:
            return await AsyncGenerationStream(decoder.stream(prompt, **options)).result_when_done()

    return list(await asyncio.gather(*(one(p) for p in items)))


def run_concurrent(decoder: Any, items: list[str], concurrency: int, **options: Any) -> dict[str, Any]:
    started = time.perf_counter()
    results = asyncio.run(_concurrent(decoder, items, concurrency, options))
    out = summarise(results, time.perf_counter() - started)
    out["concurrency"] = concurrency
    return out


def summarise(results: list[Any], wall: float) -> dict[str, Any]:
    tokens = sum(r.stats.new_tokens for r in results)
    triggers = sum(r.stats.triggers for r in results)
    s = [r.stats for r in results]
    out: dict[str, Any] = {
        "generations": len(results),
        "wall_s": round(wall, 3),
        "tokens": tokens,
        "generations_per_s": round(len(results) / wall, 4),
        "wall_s_per_token": round(wall / max(1, tokens), 5),
        "mean_latency_s_per_token": round(sum(r.stats.seconds / max(1, r.stats.new_tokens) for r in results) / len(results), 5),
        "triggers": triggers,
        "accepted": sum(r.stats.interventions_accepted for r in results),
        "policy_requests": sum(x.policy_forward_passes for x in s),
        "policy_requests_aborted": sum(x.policy_requests_aborted for x in s),
        "prompt_tokens_reprocessed": sum(x.policy_prompt_tokens_reprocessed for x in s),
        "prompt_tokens_cached": sum(x.policy_prompt_tokens_cached for x in s),
        "prompt_tokens": sum(x.prompt_tokens for x in s),
    }
    if triggers:
        out["per_trigger"] = {
            k: round(out[k] / triggers, 2) for k in ("policy_requests", "prompt_tokens_reprocessed", "prompt_tokens_cached")
        }
    return out


def agreement(backend: Any, model: Any, tokenizer: Any, decoder: Any, items: list[str], n: int, tau: float) -> dict[str, Any]:
    """The backend's estimated entropy against the exact in-process entropy along the server's greedy tokens."""
    import torch

    from ggro_integrations.backends import Sampling
    from ggro_integrations.decoding.segments import SegmentRules
    from ggro_integrations.decoding.stopping import StopSequences

    pairs: list[tuple[float, float]] = []
    for prompt in items:
        ids = decoder.prompt_ids(prompt)
        session = backend.open(ids, SegmentRules(tokenizer, math.inf, 1, backend.eos_ids, StopSequences([]), n), Sampling())
        segment = session.decode([], session.start(), [None])[0]
        session.close()
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids + segment.tokens])).logits[0, len(ids) - 1 :].float()
        logp = torch.log_softmax(logits, -1)
        exact = (-(logp.exp() * logp).sum(-1)).tolist()
        pairs += [(e, s) for e, s in zip(exact, segment.entropies) if not math.isnan(s)]
    disagree = [(round(e, 3), round(s, 3)) for e, s in pairs if (e >= tau) != (s >= tau)]
    return {
        "tau": tau,
        "positions": len(pairs),
        "agreement": round(1 - len(disagree) / max(1, len(pairs)), 4),
        "exact_triggers": sum(e >= tau for e, _ in pairs),
        "estimated_triggers": sum(s >= tau for _, s in pairs),
        "disagreements_exact_vs_estimated": disagree,
        "max_abs_error": round(max(abs(e - s) for e, s in pairs), 3) if pairs else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--parallel", type=int, default=16, help="llama-server -np (parallel slots)")
    parser.add_argument("--threads", type=int, default=1, help="llama-server -t")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--inprocess-ggro-prompts", type=int, default=None, help="default: all of them")
    parser.add_argument("--out", default=str(HERE / "results" / "server_throughput.json"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 2))
    from ggro_integrations import GGRODecoder
    from ggro_integrations.backends.server.llama_server import LlamaServerProcess, find_llama_server
    from ggro_integrations.factory import build_decoder
    from ggro_integrations.models import _find_packaged_gguf

    items = prompts(args.prompts)
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_before": round(load(), 2),
                    "torch_threads": torch.get_num_threads()},
        "settings": {"prompts": len(items), "max_new_tokens": args.max_new_tokens, "parallel_slots": args.parallel,
                     "server_threads": args.threads},
    }
    out_path = pathlib.Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every phase: a long run interrupted still leaves its numbers
        out_path.write_text(json.dumps(report, indent=2) + "\n")

    inproc = build_decoder("default", "default", max_new_tokens=args.max_new_tokens)
    report["settings"]["ggro"] = {k: inproc.config.to_dict()[k] for k in
                                  ("entropy_threshold", "nudge_top_k", "num_refinements", "min_segment_tokens", "refinement")}
    print(f"load {load():.2f}; in-process greedy ...", file=sys.stderr, flush=True)
    report["inprocess_greedy"] = run_sequential(inproc, items, strategy="greedy")
    save()
    n_ggro = args.inprocess_ggro_prompts or len(items)
    print(f"load {load():.2f}; in-process GGRO, {n_ggro} prompts one after another ...", file=sys.stderr, flush=True)
    report["inprocess_ggro_sequential"] = run_sequential(inproc, items[:n_ggro])
    save()

    command = find_llama_server()
    with tempfile.TemporaryDirectory() as tmp:
        server = LlamaServerProcess(_find_packaged_gguf(), command=command, parallel=args.parallel,
                                    threads=args.threads, ctx_size=1024 * args.parallel,
                                    log_path=pathlib.Path(tmp) / "server.log").start()
        try:
            report["server"] = {"kind": command.kind if command else None, "url": server.url}
            remote = build_decoder("default", "default", server=server.url, max_new_tokens=args.max_new_tokens)
            assert isinstance(remote, GGRODecoder)
            remote.generate(items[0], strategy="greedy")  # warm the server (first-request setup)
            print(f"load {load():.2f}; server greedy ...", file=sys.stderr, flush=True)
            report["server_greedy"] = run_sequential(remote, items, strategy="greedy")
            save()
            report["server_ggro"] = []
            for c in [int(x) for x in args.concurrency.split(",")]:
                print(f"load {load():.2f}; server GGRO, {c} concurrent ...", file=sys.stderr, flush=True)
                report["server_ggro"].append(run_concurrent(remote, items, c))
                save()
            print(f"load {load():.2f}; trigger agreement ...", file=sys.stderr, flush=True)
            model = inproc.model
            report["trigger_agreement"] = agreement(remote.backend, model, inproc.tokenizer, remote, items,
                                                    args.max_new_tokens, remote.config.entropy_threshold)
        finally:
            server.stop()
    report["machine"]["load_after"] = round(load(), 2)
    greedy = report["inprocess_greedy"]["wall_s_per_token"]
    seq = report["inprocess_ggro_sequential"]["generations_per_s"]
    report["ratios"] = {
        f"server_ggro_c{r['concurrency']}": {
            "wall_per_token_vs_inprocess_greedy": round(r["wall_s_per_token"] / greedy, 3),
            "generations_per_s_vs_inprocess_ggro_sequential": round(r["generations_per_s"] / seq, 3),
        }
        for r in report["server_ggro"]
    }
    save()
    print(json.dumps({k: report[k] for k in ("machine", "ratios")}, indent=2))
    for name in ("inprocess_greedy", "inprocess_ggro_sequential", "server_greedy"):
        r = report[name]
        print(f"{name:28s} {r['generations_per_s']:7.3f} gen/s  {r['wall_s_per_token'] * 1000:7.1f} ms/token (wall)  "
              f"{r['mean_latency_s_per_token'] * 1000:7.1f} ms/token (latency)  triggers {r['triggers']}")
    for r in report["server_ggro"]:
        print(f"server_ggro c={r['concurrency']:<3d}            {r['generations_per_s']:7.3f} gen/s  "
              f"{r['wall_s_per_token'] * 1000:7.1f} ms/token (wall)  {r['mean_latency_s_per_token'] * 1000:7.1f} "
              f"ms/token (latency)  triggers {r['triggers']}  per trigger {r.get('per_trigger')}")
    a = report["trigger_agreement"]
    print(f"trigger agreement at tau={a['tau']}: {a['agreement']:.1%} of {a['positions']} positions; "
          f"disagreements (exact, estimated): {a['disagreements_exact_vs_estimated']}")


if __name__ == "__main__":
    main()
