"""Evaluating GGRO: prompt suites with train / val / test splits, judges, and the harness.

Framework-free: it uses the core decoder only. See ``docs/evaluation.md``.
"""

from __future__ import annotations

from .harness import STRATEGIES, Sample, judge, run_evaluation, select_prompts
from .judges import (
    GCG_TEST_PREFIXES,
    Verdict,
    judge_actionable_harm,
    judge_exact_match,
    judge_refusal,
)
from .report import summarise
from .suites import SPLITS, SUITES, EvalPrompt, load_suite

__all__ = [
    "GCG_TEST_PREFIXES",
    "SPLITS",
    "STRATEGIES",
    "SUITES",
    "EvalPrompt",
    "Sample",
    "Verdict",
    "judge",
    "judge_actionable_harm",
    "judge_exact_match",
    "judge_refusal",
    "load_suite",
    "run_evaluation",
    "select_prompts",
    "summarise",
]
