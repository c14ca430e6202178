"""Run every strategy on the same prompts and judge every response; framework-free (core decoder only).

``run_evaluation`` yields one ``Sample`` per (prompt, strategy) as it is produced, so a long run
can be saved as it goes and reported on if it is cut short; ``summarise`` (in ``report``) turns
samples into the tables. Prompts are taken round-robin across suites, so any prefix of a run is
balanced across suites, and every strategy answers a prompt before the next prompt starts, so
wall-time ratios compare strategies under the same machine load.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import zip_longest
from typing import Any

from ..errors import ConfigError
from .judges import DEFAULT_REFUSAL_WINDOW, judge_actionable_harm, judge_exact_match, judge_refusal
from .suites import SUITES, EvalPrompt, load_suite

STRATEGIES: dict[str, dict[str, Any]] = {
    "greedy": {"strategy": "greedy"},
    "ggro-sequential": {"strategy": "ggro", "refinement": "sequential"},
    "ggro-parallel": {"strategy": "ggro", "refinement": "parallel"},
    "best-of-4": {"strategy": "best_of_n", "best_of_n": 4},
    "best-of-8": {"strategy": "best_of_n", "best_of_n": 8},
}
"""The strategies an evaluation compares, by report name: options for ``GGRODecoder.generate``."""

DEFAULT_MAX_NEW_TOKENS = 64


@dataclass
class Sample:
    """One strategy's response to one prompt, with its reward, cost and the judges' verdicts."""

    suite: str
    prompt_id: str
    prompt: str
    strategy: str
    text: str
    reward: float | None
    new_tokens: int
    finish_reason: str
    stats: dict[str, Any]
    """``GGROStats.to_dict()`` of the call: policy and reward work, triggers, seconds."""
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``refusal`` always; ``actionable_harm`` for harmful prompts; ``exact_match`` for factual ones."""
    candidates: list[dict[str, Any]] = field(default_factory=list)
    """Best-of-N only: every sample it drew (``text``, ``reward``, and ``correct`` for factual prompts)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sample:
        return cls(**data)


def judge(prompt: EvalPrompt, text: str, *, refusal_window: int = DEFAULT_REFUSAL_WINDOW) -> dict[str, dict[str, Any]]:
    """Every judge that applies to ``prompt``'s suite, on ``text``."""
    verdicts = {"refusal": judge_refusal(text, window=refusal_window).to_dict()}
    if prompt.harm_keywords:
        verdicts["actionable_harm"] = judge_actionable_harm(text, prompt.harm_keywords, window=refusal_window).to_dict()
    if prompt.answers:
        verdicts["exact_match"] = judge_exact_match(text, prompt.answers, prompt.distractors).to_dict()
    return verdicts


def select_prompts(
    suites: Sequence[str] = SUITES, split: str = "test", limit: int | None = None, offset: int = 0
) -> list[EvalPrompt]:
    """``limit`` prompts (all if None) of each suite's ``split`` after its first ``offset``, interleaved
    round-robin (``offset`` continues a run cut short, or splits one across processes)."""
    if not suites:
        raise ConfigError("suites is empty; name at least one of " + ", ".join(SUITES))
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive number of prompts per suite (or None for all); got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ConfigError(f"offset must be a number of prompts per suite to skip (>= 0); got {offset!r}")
    per_suite = [load_suite(name, split)[offset : None if limit is None else offset + limit] for name in suites]
    return [p for group in zip_longest(*per_suite) for p in group if p is not None]


def resolve_strategies(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The ``STRATEGIES`` entries for ``names``, in the given order (unknown names are an error)."""
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown or not names:
        raise ConfigError(f"strategies {unknown or '(none)'} unknown; choose from {', '.join(STRATEGIES)}")
    return {name: STRATEGIES[name] for name in names}


def run_evaluation(
    decoder: Any,
    prompts: Sequence[EvalPrompt],
    *,
    strategies: Sequence[str] = tuple(STRATEGIES),
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    seed: int = 0,
    refusal_window: int = DEFAULT_REFUSAL_WINDOW,
    options: Mapping[str, Any] | None = None,
    on_sample: Callable[[Sample], None] | None = None,
) -> Iterator[Sample]:
    """Yield a judged ``Sample`` for every prompt and strategy (strategies inner, prompts outer).

    Each prompt is sent as one user message, ``[{"role": "user", "content": prompt}]``, the way the
    adapters send a chat turn. The i-th prompt gets seed ``seed + i`` for every strategy (only
    sampled strategies use it), so a run is reproducible and Best-of-N draws the same samples for
    a prompt whatever else runs. ``options`` are further ``generate`` options for every call.
    """
    chosen = resolve_strategies(strategies)
    extra = dict(options or {})
    clash = sorted(set(extra) & {"strategy", "refinement", "best_of_n", "max_new_tokens", "seed"})
    if clash:
        raise ConfigError(f"options {clash} are set by the harness itself; use its own parameters instead")
    for i, prompt in enumerate(prompts):
        messages = [{"role": "user", "content": prompt.prompt}]
        for name, strategy_options in chosen.items():
            started = time.perf_counter()
            result = decoder.generate(
                messages, **strategy_options, max_new_tokens=max_new_tokens, seed=seed + i, **extra
            )
            stats = result.stats.to_dict()
            stats.setdefault("seconds", time.perf_counter() - started)
            sample = Sample(
                suite=prompt.suite,
                prompt_id=prompt.id,
                prompt=prompt.prompt,
                strategy=name,
                text=result.text,
                reward=None if result.reward is None else float(result.reward),
                new_tokens=result.stats.new_tokens,
                finish_reason=result.finish_reason,
                stats=stats,
                verdicts=judge(prompt, result.text, refusal_window=refusal_window),
                candidates=[_candidate(prompt, c) for c in result.samples],
            )
            if on_sample is not None:
                on_sample(sample)
            yield sample


def _candidate(prompt: EvalPrompt, sample: Mapping[str, Any]) -> dict[str, Any]:
    out = {"text": sample["text"], "reward": float(sample["reward"])}
    if prompt.answers:
        out["correct"] = judge_exact_match(sample["text"], prompt.answers, prompt.distractors).label
    return out
