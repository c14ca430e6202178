"""Evaluating GGRO: prompt suites with train / val / test splits, judges, and the harness.

Framework-free: it uses the core decoder only. See ``docs/evaluation.md``.
"""

from __future__ import annotations

from .suites import SPLITS, SUITES, EvalPrompt, load_suite

__all__ = ["SPLITS", "SUITES", "EvalPrompt", "load_suite"]
