"""The evaluation command: ``python benchmarks/eval.py``, ``ggro eval`` or ``python -m ggro_integrations.evaluation``.

    python benchmarks/eval.py --split test                   # embedded default, package defaults, 64 tokens
    python benchmarks/eval.py --split val --limit 4          # a quick look while tuning
    python benchmarks/eval.py --model tiny --limit 1         # tiny random models: checks the harness in seconds
    python benchmarks/eval.py --report-only --out DIR        # rebuild the tables from DIR/samples.jsonl

Writes ``samples.jsonl`` (one judged sample per line, appended as the run goes, so a run that is
cut short still has its samples), ``results.json`` (settings, tables, cost and every sample) and
``results.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .harness import (
    DEFAULT_MAX_NEW_TOKENS,
    STRATEGIES,
    Sample,
    judge,
    resolve_strategies,
    run_evaluation,
    select_prompts,
)
from .judges import DEFAULT_REFUSAL_WINDOW, judge_exact_match
from .report import markdown, summarise
from .suites import SPLITS, SUITES, load_suite


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parser(prog: str = "eval.py") -> argparse.ArgumentParser:
    from ..cli import CommandParser  # one error style for every `ggro` subcommand

    p = CommandParser(
        prog=prog,
        description="Greedy, GGRO (sequential and parallel) and Best-of-N (4, 8) on the same prompts, judged.",
    )
    p.add_argument("--model", default="default", help="policy: 'default' (embedded SmolLM2), 'tiny' (random), or a hub id / path")
    p.add_argument("--reward-model", default="default", help="reward model spec (ignored with --model tiny)")
    p.add_argument("--split", default="test", choices=SPLITS, help="prompt split (default: test, for the final table only)")
    p.add_argument("--suites", type=_csv, default=list(SUITES), help=f"comma-separated, from {','.join(SUITES)}")
    p.add_argument("--strategies", type=_csv, default=list(STRATEGIES), help=f"comma-separated, from {','.join(STRATEGIES)}")
    p.add_argument("--limit", type=int, default=None, help="at most this many prompts per suite")
    p.add_argument("--offset", type=int, default=0, help="skip the first OFFSET prompts of each suite (with --limit: shards)")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--seed", type=int, default=0, help="prompt i is decoded with seed SEED+i (Best-of-N sampling)")
    p.add_argument("--refusal-window", type=int, default=DEFAULT_REFUSAL_WINDOW, help="characters the refusal judges read")
    p.add_argument("--samples-in-markdown", type=int, default=2, help="prompts per suite shown in results.md")
    p.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results/eval/<split>)")
    p.add_argument("--report-only", action="store_true", help="no decoding: rebuild the report from OUT/samples.jsonl, re-judged")
    p.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="RUN",
        default=None,
        help="no decoding: one report in --out from several runs' folders (a settings grid); a run's "
        "strategies are named with its --set options",
    )
    p.add_argument(
        "--set",
        dest="settings",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="a GGRO option for every call, e.g. --set entropy_threshold=2.5 (repeatable; measure on --split val)",
    )
    return p


def parse_settings(pairs: Sequence[str]) -> dict[str, Any]:
    """``["entropy_threshold=2.5", "nudge_top_k=10"]`` as generate options, validated by ``GGROConfig``."""
    from ..config import GGROConfig, config_field_names

    owned = {"max_new_tokens", "seed", "refinement", "best_of_n"}
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: write it as KEY=VALUE, e.g. --set entropy_threshold=2.5")
        if key in owned:
            raise ConfigError(f"--set {key}: the evaluation sets {key} itself; use its own flag or strategy names instead")
        if key not in config_field_names():
            raise ConfigError(f"--set {key}: unknown GGRO option; valid options are: {', '.join(config_field_names())}")
        options[key] = _parse_value(raw.strip())
    GGROConfig().replace(**options)  # every value checked, with the option's own error message
    return options


def _parse_value(raw: str) -> Any:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def build(model: str, reward_model: str) -> tuple[Any, dict[str, str]]:
    """The decoder under evaluation, and how to name it in the report."""
    if model == "tiny":
        from ..testing import tiny_decoder

        decoder = tiny_decoder(tools=False)
        return decoder, {"policy": "tiny random Llama (ggro_integrations.testing)", "reward_model": decoder.reward_model.name}
    from ..factory import build_decoder

    decoder = build_decoder(model, reward_model)
    name = getattr(decoder.reward_model, "name", str(reward_model))
    return decoder, {"policy": model, "reward_model": name}


def _load_samples(path: Path) -> list[Sample]:
    return [Sample.from_dict(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def rejudge(samples: list[Sample], refusal_window: int) -> list[Sample]:
    """The samples with their verdicts recomputed by the current judges (from the prompts' suites)."""
    prompts = {(p.suite, p.id): p for name in SUITES for p in load_suite(name)}
    for s in samples:
        prompt = prompts.get((s.suite, s.prompt_id))
        if prompt is None:
            raise ValueError(f"sample for {s.suite}/{s.prompt_id}: no such prompt in the packaged suites")
        s.verdicts = judge(prompt, s.text, refusal_window=refusal_window)
        for c in s.candidates:
            if prompt.answers:
                c["correct"] = judge_exact_match(c["text"], prompt.answers, prompt.distractors).label
    return samples


def setting_label(strategy: str, options: dict[str, Any]) -> str:
    """``ggro-sequential entropy_threshold=2.0``: a strategy named with the options its run set."""
    if not options:
        return strategy
    return strategy + " " + ",".join(f"{k}={v}" for k, v in options.items())


def merge_runs(runs: Sequence[Path], refusal_window: int) -> tuple[list[Sample], dict[str, Any]]:
    """Every run's samples, re-judged, with strategies named by their run's options (``setting_label``).

    Runs of one setting on different prompts (shards: ``--suites`` or ``--offset``/``--limit``)
    merge into one row. The same setting answering a prompt twice is an error, as are runs on
    different splits or token budgets (their rows would not compare).
    """
    samples: list[Sample] = []
    metas = []
    seen: dict[tuple[str, str, str], Path] = {}
    for run in runs:
        meta_path, samples_path = run / "meta.json", run / "samples.jsonl"
        if not samples_path.exists():
            raise ConfigError(f"--merge {run}: no samples.jsonl there; give folders written by a run (--out)")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        options = meta.get("options") or {}
        metas.append({"run": str(run), "argv": meta.get("argv"), "options": options, "split": meta.get("split"),
                      "max_new_tokens": meta.get("max_new_tokens"), "config": meta.get("config"),
                      "decode_seconds": meta.get("decode_seconds"), "started_utc": meta.get("started_utc")})
        run_samples = _load_samples(samples_path)
        for s in run_samples:
            s.strategy = setting_label(s.strategy, options)
            key = (s.strategy, s.suite, s.prompt_id)
            if key in seen:
                raise ConfigError(
                    f"--merge: {s.strategy!r} answered {s.suite}/{s.prompt_id} in both {seen[key]} and {run}; "
                    "merge each setting once (shards of one setting must cover different prompts)"
                )
            seen[key] = run
        samples += run_samples
    for key in ("split", "max_new_tokens"):
        values = {m[key] for m in metas}
        if len(values) > 1:
            raise ConfigError(f"--merge: the runs differ in {key} ({sorted(map(str, values))}); their rows would not compare")
    merged = {"split": metas[0]["split"], "max_new_tokens": metas[0]["max_new_tokens"], "merged_runs": metas,
              "completed_samples": len(samples)}
    return rejudge(samples, refusal_window), merged


def write_report(out: Path, samples: list[Sample], meta: dict[str, Any], per_suite: int) -> dict[str, Any]:
    summary = summarise(samples)
    data = {"meta": meta, "summary": summary, "samples": [s.to_dict() for s in samples]}
    (out / "results.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    (out / "results.md").write_text(markdown(summary, samples, meta, per_suite))
    return summary


def main(argv: Sequence[str] | None = None, prog: str = "eval.py") -> int:
    """Run the evaluation command (``prog`` names it in help and errors: ``ggro eval`` from the CLI)."""
    args = parser(prog).parse_args(argv)
    if args.merge and (args.out is None or any(args.out.resolve() == r.resolve() for r in args.merge)):
        parser(prog).error("--merge needs its own --out folder (not one of the runs it merges)")
    out = args.out or Path("benchmarks/results/eval") / args.split
    out.mkdir(parents=True, exist_ok=True)
    samples_path = out / "samples.jsonl"
    if args.merge:
        try:
            samples, meta = merge_runs(args.merge, args.refusal_window)
        except ConfigError as exc:
            parser(prog).error(str(exc))
        with samples_path.open("w") as sink:
            sink.writelines(json.dumps(s.to_dict(), ensure_ascii=False) + "\n" for s in samples)
        (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        write_report(out, samples, meta, args.samples_in_markdown)
        print(f"merged {len(args.merge)} runs ({len(samples)} samples): {out / 'results.md'}", file=sys.stderr)
        return 0
    if args.report_only:
        meta_path = out / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"split": args.split}
        samples = rejudge(_load_samples(samples_path), args.refusal_window)
        meta["completed_samples"] = len(samples)
        write_report(out, samples, meta, args.samples_in_markdown)
        print(f"report rebuilt from {len(samples)} samples: {out / 'results.md'}", file=sys.stderr)
        return 0
    try:  # bad names fail here, with the choices, before any model loads
        resolve_strategies(args.strategies)
        prompts = select_prompts(args.suites, args.split, args.limit, args.offset)
        options = parse_settings(args.settings)
    except (ConfigError, ValueError) as exc:
        parser(prog).error(str(exc))
    started = time.time()
    decoder, names = build(args.model, args.reward_model)
    load_seconds = time.time() - started
    meta: dict[str, Any] = {
        "split": args.split,
        "suites": ",".join(args.suites),
        "strategies": ",".join(args.strategies),
        "prompts": len(prompts),
        "limit_per_suite": args.limit,
        "offset_per_suite": args.offset,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "refusal_window": args.refusal_window,
        **names,
        "options": options,
        # The decoder's configuration as every call used it (seed: per prompt, above).
        "config": {
            k: v
            for k, v in decoder.config.replace(max_new_tokens=args.max_new_tokens, **options).to_dict().items()
            if k != "seed"
        },
        "python": platform.python_version(),
        "machine": platform.machine(),
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started)),
        "load_seconds": round(load_seconds, 1),
        "argv": ("python benchmarks/eval.py" if prog == "eval.py" else prog)
        + " "
        + shlex.join(sys.argv[1:] if argv is None else list(argv)),
    }
    try:
        import torch

        meta["torch"] = torch.__version__
        meta["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    samples: list[Sample] = []
    with samples_path.open("w") as sink:
        for sample in run_evaluation(
            decoder,
            prompts,
            strategies=args.strategies,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            refusal_window=args.refusal_window,
            options=options,
        ):
            sink.write(json.dumps(sample.to_dict(), ensure_ascii=False) + "\n")
            sink.flush()
            samples.append(sample)
            print(
                f"{len(samples):4d}/{len(prompts) * len(args.strategies)} {sample.suite}/{sample.prompt_id} "
                f"{sample.strategy:<16} {sample.stats['seconds']:6.1f}s reward {sample.reward}",
                file=sys.stderr,
                flush=True,
            )
    meta["decode_seconds"] = round(time.time() - started - load_seconds, 1)
    meta["completed_samples"] = len(samples)
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    write_report(out, samples, meta, args.samples_in_markdown)
    print(f"wrote {out / 'results.md'} and {out / 'results.json'} ({meta['decode_seconds']} s decoding)", file=sys.stderr)
    return 0
