"""GGRO vs greedy vs Best-of-N, all measured in one run.

    python benchmarks/run.py            # embedded default policy + default reward head
    python benchmarks/run.py --quick    # tiny random models: checks the harness in seconds

For each strategy it reports wall time as a ratio to greedy measured in the
same run, policy tokens processed per output token, reward-model tokens
processed, interventions, peak memory growth, and mean final reward — for a set
of short prompts and for a long-context (RAG-sized) prompt. It writes
``results.md``, ``results.json`` and ``reward_vs_compute.png`` into
``--out`` (default ``benchmarks/results/<mode>``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ggro_integrations import GGRODecoder, GGROResult  # noqa: E402

STRATEGIES: list[tuple[str, dict[str, Any]]] = [
    ("greedy", {"strategy": "greedy"}),
    ("ggro-sequential", {"strategy": "ggro", "refinement": "sequential"}),
    ("ggro-parallel", {"strategy": "ggro", "refinement": "parallel"}),
    ("best-of-4", {"strategy": "best_of_n", "best_of_n": 4}),
    ("best-of-8", {"strategy": "best_of_n", "best_of_n": 8}),
    ("best-of-16", {"strategy": "best_of_n", "best_of_n": 16}),
]


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every few milliseconds."""

    def __init__(self) -> None:
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 2**20


@dataclass
class Row:
    name: str
    case: str
    seconds: float = 0.0
    output_tokens: int = 0
    policy_tokens: int = 0
    policy_tokens_after_prefill: int = 0
    reward_tokens: int = 0
    reward_tokens_after_prompt: int = 0
    reward_backward: int = 0
    triggers: int = 0
    accepted: int = 0
    peak_mb: float = 0.0
    rewards: list[float] = field(default_factory=list)

    def add(self, result: GGROResult) -> None:
        s = result.stats
        self.seconds += s.seconds
        self.output_tokens += s.new_tokens
        self.policy_tokens += s.policy_tokens_processed
        self.policy_tokens_after_prefill += s.policy_tokens_processed - s.prompt_tokens
        self.reward_tokens += s.reward_tokens_processed
        self.reward_tokens_after_prompt += s.reward_tokens_processed - s.reward_prompt_tokens_processed
        self.reward_backward += s.reward_backward_passes
        self.triggers += s.triggers
        self.accepted += s.interventions_accepted
        self.rewards.append(float(result.reward))

    @property
    def mean_reward(self) -> float:
        return statistics.fmean(self.rewards)

    @property
    def cost_per_trigger(self) -> float | None:
        """Policy + reward tokens processed per trigger; each model's one read of the prompt excluded."""
        if not self.triggers:
            return None
        return (self.policy_tokens_after_prefill + self.reward_tokens_after_prompt) / self.triggers


def load_prompts(quick: bool) -> tuple[list[str], str]:
    prompts = [json.loads(line)["prompt"] for line in (HERE / "prompts.jsonl").read_text().splitlines() if line]
    context = (HERE / "long_context.md").read_text()
    question = "Using only the notes above, what should someone do before opening a sealed chemical drum?"
    long_prompt = f"{context}\n\nQuestion: {question}"
    return (prompts[:3] if quick else prompts), long_prompt


def build(quick: bool, threshold: float | None) -> tuple[GGRODecoder, dict[str, Any]]:
    if quick:
        from ggro_integrations.rewards import HFRewardModel
        from ggro_integrations.testing import tiny_causal_lm, tiny_reward_model, tiny_tokenizer

        tok = tiny_tokenizer()
        decoder = GGRODecoder(
            tiny_causal_lm(tok, "llama", hidden=64, layers=4, context=8192),
            tok,
            HFRewardModel(tiny_reward_model(tok, context=8192), tok, name="tiny-random"),
            entropy_threshold=threshold if threshold is not None else 1.5,
        )
        return decoder, {"policy": "tiny random Llama (64 hidden, 4 layers)", "reward": "tiny random Llama classifier"}
    from ggro_integrations import build_decoder
    from ggro_integrations.rewards.default import DEFAULT_REWARD_NAME

    # build_decoder applies the embedded default's measured settings; a threshold given here wins.
    decoder = build_decoder("default", "default", entropy_threshold=threshold)
    return decoder, {"policy": "SmolLM2-135M-Instruct (embedded default)", "reward": DEFAULT_REWARD_NAME}


def run_case(decoder: GGRODecoder, case: str, prompts: list[str], settings: dict[str, Any]) -> list[Row]:
    rows = []
    for name, kwargs in STRATEGIES:
        row = Row(name, case)
        with PeakRSS() as mem:
            for i, prompt in enumerate(prompts):
                result = decoder.generate(prompt, seed=i, **settings, **kwargs)
                row.add(result)
        row.peak_mb = mem.growth_mb
        rows.append(row)
        print(f"  {case:>5} {name:<16} {row.seconds:7.1f}s  reward {row.mean_reward:+.3f}", file=sys.stderr)
    return rows


def table(rows: list[Row]) -> str:
    greedy = {r.case: r for r in rows if r.name == "greedy"}
    lines = [
        "| case | strategy | wall time vs greedy | policy tokens / output token (after prefill) | reward-model tokens "
        "| reward backward passes | triggers (accepted) | cost / trigger (tokens) | peak memory growth (MB) "
        "| mean reward |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = greedy[r.case]
        cost = f"{r.cost_per_trigger:.0f}" if r.cost_per_trigger is not None else "–"
        lines.append(
            f"| {r.case} | {r.name} | {r.seconds / base.seconds:.2f}× | "
            f"{r.policy_tokens_after_prefill / max(1, r.output_tokens):.1f} | {r.reward_tokens} | {r.reward_backward} | "
            f"{r.triggers} ({r.accepted}) | {cost} | {r.peak_mb:.0f} | {r.mean_reward:+.3f} |"
        )
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: skipping the plot (pip install matplotlib)", file=sys.stderr)
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, case in zip(axes, ["short", "long"]):
        greedy = next(r for r in rows if r.case == case and r.name == "greedy")
        for r in (r for r in rows if r.case == case):
            ax.scatter(r.seconds / greedy.seconds, r.mean_reward, s=40)
            ax.annotate(r.name, (r.seconds / greedy.seconds, r.mean_reward), fontsize=8, xytext=(4, 4),
                        textcoords="offset points")
        ax.set_xlabel("wall time (× greedy, same run)")
        ax.set_ylabel("mean final reward")
        ax.set_title(f"{case} prompts")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny random models (seconds), to check the harness")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--entropy-threshold", type=float, default=None)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N short prompts")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    decoder, models = build(args.quick, args.entropy_threshold)
    prompts, long_prompt = load_prompts(args.quick)
    if args.limit:
        prompts = prompts[: args.limit]
    settings = {"max_new_tokens": args.max_new_tokens or (24 if args.quick else 64), "num_refinements": 8}
    decoder.generate(prompts[0], strategy="greedy", max_new_tokens=4)  # warm-up: first-call allocations
    rows = run_case(decoder, "short", prompts, settings)
    rows += run_case(decoder, "long", [long_prompt], settings)

    out = args.out or HERE / "results" / ("quick" if args.quick else "default")
    out.mkdir(parents=True, exist_ok=True)
    long_tokens = len(decoder.tokenizer.encode(long_prompt))
    header = {
        "command": "python benchmarks/run.py" + (" --quick" if args.quick else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        **models,
        "short prompts": len(prompts),
        "long prompt tokens": long_tokens,
        "entropy_threshold": decoder.config.entropy_threshold,
        "nudge_top_k": decoder.config.nudge_top_k,
        **settings,
    }
    md = "\n".join(f"- **{k}**: {v}" for k, v in header.items()) + "\n\n" + table(rows) + "\n"
    (out / "results.md").write_text(md)
    (out / "results.json").write_text(
        json.dumps({"settings": header, "rows": [r.__dict__ | {"mean_reward": r.mean_reward} for r in rows]}, indent=2)
    )
    plotted = plot(rows, out / "reward_vs_compute.png")
    print(md)
    short_cost = next(r for r in rows if r.case == "short" and r.name == "ggro-parallel").cost_per_trigger
    long_cost = next(r for r in rows if r.case == "long" and r.name == "ggro-parallel").cost_per_trigger
    if short_cost and long_cost:
        print(f"cost per intervention, long / short prompt (ggro-parallel): {long_cost / short_cost:.2f}")
    print(f"wrote {out}/results.md, results.json" + (", reward_vs_compute.png" if plotted else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
