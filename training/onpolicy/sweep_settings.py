"""Measure GGRO settings for the embedded default on the validation prompts (never the test split).

    python training/onpolicy/sweep_settings.py --prompts P.jsonl ... --out S.jsonl \
        --configs "greedy" "best_of_n:best_of_n=8" "ggro:entropy_threshold=3.0,nudge_top_k=5,num_refinements=8"

Each config is ``strategy[:field=value,...]`` (``GGROConfig`` fields; ``refinement=parallel``
etc.). Every prompt is run once per config with the same decoder, reward and seed; each
row records the text, its reward under the default head, and the work counters. The
summary prints, per config and suite: refusal rate (the GCG / AdvBench refusal-phrase
list on the first 200 characters, ``rollouts.REFUSAL_PHRASES``), factual exact-match
accuracy (an accepted answer appears and no listed distractor comes before it), mean
reward, and policy tokens / wall time relative to greedy.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "training" / "onpolicy"))

from rollouts import looks_like_refusal, parse_limit, read_prompts  # noqa: E402

from ggro_integrations import build_decoder  # noqa: E402


def factual_correct(text: str, answers: list[str], distractors: list[str]) -> bool:
    low = text.lower()
    hits = [low.find(a.lower()) for a in answers if a.lower() in low]
    if not hits:
        return False
    first = min(hits)
    return not any(0 <= low.find(d.lower()) < first for d in distractors)


def parse_config(spec: str) -> tuple[str, str, dict[str, Any]]:
    strategy, _, rest = spec.partition(":")
    opts: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, value = part.split("=")
        for cast in (int, float):
            try:
                opts[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            opts[key] = value
    return spec, strategy, opts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=pathlib.Path, nargs="+", required=True)
    parser.add_argument("--limit", default="")
    parser.add_argument("--configs", nargs="+", required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prompts = read_prompts(args.prompts, parse_limit(args.limit))
    extra = {}
    for path in args.prompts:  # answers / distractors of factual prompts
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                extra[row["id"]] = row
    for p in prompts:
        if p["split"] not in ("val", "heldout"):
            raise SystemExit(f"{p['id']} is in split {p['split']!r}: settings are measured on validation prompts only")
    decoder = build_decoder("default", "default")
    done = set()
    if args.out.exists():
        done = {(r["config"], r["id"]) for r in map(json.loads, args.out.read_text().splitlines()) if r}
    with open(args.out, "a", encoding="utf-8") as out:
        for spec, strategy, opts in map(parse_config, args.configs):
            for p in prompts:
                if (spec, p["id"]) in done:
                    continue
                started = time.perf_counter()
                result = decoder.generate(p["prompt"], strategy=strategy, max_new_tokens=args.max_new_tokens,
                                          seed=args.seed, **opts)
                row = {"config": spec, "id": p["id"], "category": p["category"], "text": result.text,
                       "reward": result.reward, "seconds": round(time.perf_counter() - started, 2),
                       "refused": looks_like_refusal(result.text), **result.stats.to_dict()}
                if "answers" in extra[p["id"]]:
                    row["correct"] = factual_correct(result.text, extra[p["id"]]["answers"],
                                                     extra[p["id"]].get("distractors", []))
                out.write(json.dumps(row) + "\n")
                out.flush()
                print(f"  {spec} {p['id']} {row['seconds']} s reward {result.reward:.2f} "
                      f"{'REFUSED ' if row['refused'] else ''}{result.text[:60]!r}", file=sys.stderr)
    summarise(args.out)
    return 0


def summarise(path: pathlib.Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    configs = list(dict.fromkeys(r["config"] for r in rows))
    greedy = {r["id"]: r for r in rows if r["config"] == "greedy"}
    print(f"{'config':<64}{'harm ref':>9}{'benign ref':>11}{'fact acc':>9}{'reward':>8}{'pol tok':>8}{'time x':>7}")
    for c in configs:
        sub = [r for r in rows if r["config"] == c]

        def rate(cat: str, key: str) -> str:
            xs = [r[key] for r in sub if r["category"] == cat and key in r]
            return f"{sum(xs)}/{len(xs)}" if xs else "-"

        reward = sum(r["reward"] for r in sub) / len(sub)
        ids = [r["id"] for r in sub if r["id"] in greedy]
        tok = sum(r["policy_tokens_processed"] for r in sub if r["id"] in greedy) / max(
            1, sum(greedy[i]["policy_tokens_processed"] for i in ids))
        secs = sum(r["seconds"] for r in sub if r["id"] in greedy) / max(1e-9, sum(greedy[i]["seconds"] for i in ids))
        print(f"{c:<64}{rate('harmful', 'refused'):>9}{rate('benign_risky', 'refused'):>11}"
              f"{rate('factual', 'correct'):>9}{reward:>8.2f}{tok:>8.2f}{secs:>7.2f}")


if __name__ == "__main__":
    sys.exit(main())
