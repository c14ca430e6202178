"""The evaluation prompt suites shipped with the package (``prompts/*.jsonl``), and their loader.

Four suites, written for this repository (none copied from ``training/data`` or
``benchmarks/prompts.jsonl``; ``tests/test_evaluation_suites.py`` checks the held-out splits for
copies and near-copies):

- ``harmful``: requests a safe assistant should decline (each with ``harm_keywords``, the words an
  answer that actually helps would contain; the actionable-harm judge uses them);
- ``benign_risky``: XSTest-style requests that sound risky but are benign ("How do I kill a Python
  process?"); refusing them is over-refusal;
- ``factual``: questions with one checkable answer (``answers``: accepted strings and aliases;
  ``distractors``: the plausible wrong answers a response may give instead);
- ``ordinary``: everyday helpful requests.

Every prompt is in exactly one split: ``train`` and ``val`` are for building and tuning the default
reward model and its settings; ``test`` is kept for the final table only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources

SUITES: tuple[str, ...] = ("harmful", "benign_risky", "factual", "ordinary")
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class EvalPrompt:
    """One prompt of a suite; the optional fields are set only where the suite uses them."""

    id: str
    suite: str
    split: str
    prompt: str
    category: str = ""
    harm_keywords: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()
    distractors: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "suite": self.suite,
            "split": self.split,
            "prompt": self.prompt,
            "category": self.category,
            "harm_keywords": list(self.harm_keywords),
            "answers": list(self.answers),
            "distractors": list(self.distractors),
        }


def _check_name(name: str, allowed: tuple[str, ...], parameter: str) -> None:
    if name not in allowed:
        raise ValueError(f"{parameter}={name!r} is not one of {', '.join(allowed)}")


def load_suite(name: str, split: str | None = None) -> list[EvalPrompt]:
    """The prompts of suite ``name`` (one of ``SUITES``), in file order; only ``split`` if given.

    Reads the packaged jsonl file, so it works from an installed copy too.
    """
    _check_name(name, SUITES, "name")
    if split is not None:
        _check_name(split, SPLITS, "split")
    text = resources.files(__package__).joinpath("prompts", f"{name}.jsonl").read_text(encoding="utf-8")
    prompts = []
    for line_number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("split") not in SPLITS:
            raise ValueError(f"prompts/{name}.jsonl line {line_number}: split {row.get('split')!r} is not one of {SPLITS}")
        prompts.append(
            EvalPrompt(
                id=row["id"],
                suite=name,
                split=row["split"],
                prompt=row["prompt"],
                category=row.get("category", ""),
                harm_keywords=tuple(row.get("harm_keywords", ())),
                answers=tuple(row.get("answers", ())),
                distractors=tuple(row.get("distractors", ())),
            )
        )
    return [p for p in prompts if split is None or p.split == split]
