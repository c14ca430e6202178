"""Tables from judged samples: safety, over-refusal, reward hacking, helpfulness, and cost.

Pure functions of the samples (``harness.Sample``), so a saved run can be re-reported without
decoding again (``python benchmarks/eval.py --report-only --out DIR``).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from .harness import Sample

SUITE_TITLES = {
    "harmful": "Safety: harmful requests",
    "benign_risky": "Over-refusal: benign requests that sound risky",
    "factual": "Reward hacking: questions with one checkable answer",
    "ordinary": "Helpfulness: ordinary requests",
}


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _rate(samples: Sequence[Sample], verdict: str) -> float | None:
    judged = [s for s in samples if verdict in s.verdicts]
    return _mean([float(s.verdicts[verdict]["label"]) for s in judged]) if judged else None


def _changes_vs(base: Mapping[str, Sample], samples: Sequence[Sample], verdict: str) -> dict[str, int]:
    """Prompts where ``verdict`` turned true (gained) or false (lost) relative to ``base`` (by prompt id)."""
    gained = lost = 0
    for s in samples:
        b = base.get(s.prompt_id)
        if b is None or verdict not in s.verdicts:
            continue
        now, before = s.verdicts[verdict]["label"], b.verdicts[verdict]["label"]
        gained += int(now and not before)
        lost += int(before and not now)
    return {"gained": gained, "lost": lost}


def summarise(samples: Sequence[Sample], baseline: str = "greedy") -> dict[str, Any]:
    """Per suite and strategy: rates, mean reward and length, changes vs ``baseline``; per strategy: cost."""
    by: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    strategies: list[str] = []
    suites: list[str] = []
    for s in samples:
        by[(s.suite, s.strategy)].append(s)
        if s.strategy not in strategies:
            strategies.append(s.strategy)
        if s.suite not in suites:
            suites.append(s.suite)
    suite_rows: dict[str, dict[str, Any]] = {}
    for suite in suites:
        base = {s.prompt_id: s for s in by.get((suite, baseline), [])}
        rows = {}
        for strategy in strategies:
            group = by.get((suite, strategy), [])
            if not group:
                continue
            rewards = [s.reward for s in group if s.reward is not None]
            row: dict[str, Any] = {
                "prompts": len(group),
                "refusal_rate": _rate(group, "refusal"),
                "mean_reward": _mean(rewards),
                "mean_new_tokens": _mean([s.new_tokens for s in group]),
            }
            if any("actionable_harm" in s.verdicts for s in group):
                row["actionable_harm_rate"] = _rate(group, "actionable_harm")
            if any("exact_match" in s.verdicts for s in group):
                row["exact_match_accuracy"] = _rate(group, "exact_match")
                row["mentions_a_wrong_answer"] = sum(
                    bool(s.verdicts["exact_match"]["evidence"]["conflicting"]) for s in group
                )
                drawn = [s for s in group if s.candidates]
                if drawn:  # Best-of-N: how often a correct answer was among the samples it chose from
                    row["any_candidate_correct"] = _mean([float(any(c.get("correct") for c in s.candidates)) for s in drawn])
            if base and strategy != baseline:
                row["refusals_vs_" + baseline] = _changes_vs(base, group, "refusal")
                if "exact_match_accuracy" in row:
                    row["correct_vs_" + baseline] = _changes_vs(base, group, "exact_match")
                if "actionable_harm_rate" in row:
                    row["actionable_vs_" + baseline] = _changes_vs(base, group, "actionable_harm")
            rows[strategy] = row
        suite_rows[suite] = rows
    return {"baseline": baseline, "suites": suite_rows, "cost": cost(samples, baseline)}


_COUNTERS = (
    "policy_forward_passes",
    "policy_tokens_processed",
    "reward_calls",
    "reward_tokens_processed",
    "reward_backward_passes",
    "triggers",
    "interventions_accepted",
    "seconds",
)


def cost(samples: Sequence[Sample], baseline: str = "greedy") -> dict[str, dict[str, Any]]:
    """Per strategy: totals of the ``GGROStats`` counters, per-prompt means, and wall time vs ``baseline``
    over the prompts both answered (same run, same prompts, interleaved)."""
    by: dict[str, dict[str, Sample]] = defaultdict(dict)
    for s in samples:
        by[s.strategy][s.suite + "/" + s.prompt_id] = s
    base = by.get(baseline, {})
    out: dict[str, dict[str, Any]] = {}
    for strategy, group in by.items():
        totals = {k: sum(float(s.stats.get(k, 0)) for s in group.values()) for k in _COUNTERS}
        totals["new_tokens"] = sum(s.new_tokens for s in group.values())
        totals["policy_tokens_after_prefill"] = sum(
            s.stats["policy_tokens_processed"] - s.stats["prompt_tokens"] for s in group.values()
        )
        n = len(group)
        row: dict[str, Any] = {"prompts": n, "totals": totals, "per_prompt": {k: v / n for k, v in totals.items()}}
        shared = [key for key in group if key in base]
        base_seconds = sum(base[key].stats["seconds"] for key in shared)
        row["wall_time_vs_" + baseline] = (
            sum(group[key].stats["seconds"] for key in shared) / base_seconds if shared and base_seconds > 0 else None
        )
        out[strategy] = row
    return out


# -- Markdown ---------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def _changes(row: Mapping[str, Any], key: str) -> str:
    change = row.get(key)
    return "–" if change is None else f"+{change['gained']} / −{change['lost']}"


def headline_table(summary: Mapping[str, Any]) -> str:
    """One row per strategy, the issue's four questions side by side."""
    suites = summary["suites"]
    strategies = list(summary["cost"])
    b = summary["baseline"]
    lines = [
        "| strategy | harmful: refused | harmful: actionable | harmful: mean reward | benign-risky: refused "
        "| factual: exact match | factual: mean reward | ordinary: mean reward | policy tokens / prompt "
        f"| wall time vs {b} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for st in strategies:
        def get(suite: str, key: str) -> Any:
            return suites.get(suite, {}).get(st, {}).get(key)

        c = summary["cost"][st]
        ratio = c.get("wall_time_vs_" + b)
        lines.append(
            f"| {st} | {_pct(get('harmful', 'refusal_rate'))} | {_pct(get('harmful', 'actionable_harm_rate'))} "
            f"| {_num(get('harmful', 'mean_reward'))} | {_pct(get('benign_risky', 'refusal_rate'))} "
            f"| {_pct(get('factual', 'exact_match_accuracy'))} | {_num(get('factual', 'mean_reward'))} "
            f"| {_num(get('ordinary', 'mean_reward'))} | {c['per_prompt']['policy_tokens_processed']:.0f} "
            f"| {'–' if ratio is None else f'{ratio:.2f}×'} |"
        )
    return "\n".join(lines)


def suite_table(suite: str, rows: Mapping[str, Mapping[str, Any]], baseline: str) -> str:
    """The detailed table of one suite."""
    head = ["strategy", "prompts", "refused (GCG phrases)"]
    has_harm = any("actionable_harm_rate" in r for r in rows.values())
    has_exact = any("exact_match_accuracy" in r for r in rows.values())
    if has_harm:
        head += ["actionable harm", f"refusals vs {baseline} (+gained / −lost)", f"actionable vs {baseline}"]
    if has_exact:
        head += [
            "exact match",
            f"correct vs {baseline} (+fixed / −broke)",
            "mentions a wrong answer",
            "a correct sample was drawn (Best-of-N)",
        ]
    head += ["mean reward", "mean length (tokens)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for st, r in rows.items():
        cells = [st, str(r["prompts"]), _pct(r["refusal_rate"])]
        if has_harm:
            cells += [
                _pct(r.get("actionable_harm_rate")),
                _changes(r, "refusals_vs_" + baseline),
                _changes(r, "actionable_vs_" + baseline),
            ]
        if has_exact:
            cells += [
                _pct(r.get("exact_match_accuracy")),
                _changes(r, "correct_vs_" + baseline),
                str(r.get("mentions_a_wrong_answer", "–")),
                _pct(r.get("any_candidate_correct")),
            ]
        cells += [_num(r["mean_reward"]), f"{r['mean_new_tokens']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(cost_rows: Mapping[str, Mapping[str, Any]], baseline: str) -> str:
    lines = [
        f"| strategy | wall time vs {baseline} | policy forward passes / prompt | policy tokens / prompt "
        "(after prefill) | reward calls / prompt | reward tokens / prompt | reward backward passes / prompt "
        "| triggers (accepted) / prompt | seconds / prompt |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for st, c in cost_rows.items():
        p = c["per_prompt"]
        ratio = c.get("wall_time_vs_" + baseline)
        lines.append(
            f"| {st} | {'–' if ratio is None else f'{ratio:.2f}×'} | {p['policy_forward_passes']:.1f} "
            f"| {p['policy_tokens_processed']:.0f} ({p['policy_tokens_after_prefill']:.0f}) | {p['reward_calls']:.1f} "
            f"| {p['reward_tokens_processed']:.0f} | {p['reward_backward_passes']:.1f} "
            f"| {p['triggers']:.1f} ({p['interventions_accepted']:.1f}) | {p['seconds']:.1f} |"
        )
    return "\n".join(lines)


def _verdict_tags(sample: Sample) -> str:
    v = sample.verdicts
    tags = ["refused" if v["refusal"]["label"] else "not refused"]
    if "actionable_harm" in v:
        tags.append("actionable" if v["actionable_harm"]["label"] else "not actionable")
    if "exact_match" in v:
        tags.append("correct" if v["exact_match"]["label"] else "wrong")
    return ", ".join(tags)


def samples_section(samples: Sequence[Sample], per_suite: int = 2, chars: int = 300) -> str:
    """The first ``per_suite`` prompts of each suite, every strategy's response with reward and verdicts."""
    order: dict[str, list[str]] = defaultdict(list)
    grouped: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for s in samples:
        if s.prompt_id not in order[s.suite]:
            order[s.suite].append(s.prompt_id)
        grouped[(s.suite, s.prompt_id)].append(s)
    parts = []
    for suite, ids in order.items():
        for pid in ids[:per_suite]:
            group = grouped[(suite, pid)]
            parts.append(f"**{suite} / {pid}: {group[0].prompt}**\n")
            for s in group:
                text = s.text.replace("\n", " ").strip()
                text = text if len(text) <= chars else text[:chars] + " …"
                parts.append(f"- *{s.strategy}* (reward {_num(s.reward)}; {_verdict_tags(s)}): {text}")
            parts.append("")
    return "\n".join(parts)


def markdown(summary: Mapping[str, Any], samples: Sequence[Sample], meta: Mapping[str, Any], per_suite: int = 2) -> str:
    b = summary["baseline"]
    lines = [f"# GGRO evaluation: split `{meta.get('split')}`", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k not in ("argv",)]
    if "argv" in meta:
        lines.append(f"- command: `{meta['argv']}`")
    lines += ["", "## Summary", "", headline_table(summary), ""]
    for suite, rows in summary["suites"].items():
        lines += [f"## {SUITE_TITLES.get(suite, suite)}", "", suite_table(suite, rows, b), ""]
    lines += ["## Cost", "", cost_table(summary["cost"], b), ""]
    lines += [f"## Samples (first {per_suite} prompts of each suite)", "", samples_section(samples, per_suite)]
    return "\n".join(lines)
