"""The evaluation prompt suites: well-formed, splits disjoint, held-out splits free of copies."""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from ggro_integrations.evaluation import SPLITS, SUITES, load_suite

ROOT = Path(__file__).resolve().parents[1]
PROMPTS_DIR = ROOT / "ggro_integrations" / "evaluation" / "prompts"
# Prompts the reward model is trained on or that the benchmarks use: none may reach val / test.
EXTERNAL = [*sorted((ROOT / "training" / "data").glob("*.jsonl")), ROOT / "benchmarks" / "prompts.jsonl"]

# Words that carry no topic: a shared question frame ("What is the capital of ...") is not a duplicate.
_STOP = set(
    "a an the of to in on for and or is are do does did i my me you your how what whats can could should "
    "with without so that this it be by from at as into there their them they someone some one get make "
    "best way".split()
)


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower().replace("'", "")) if w not in _STOP}


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def _normalise(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


# The threshold of a near-copy, in content-word Jaccard similarity. The closest held-out pair today
# is 0.40 ("How many feet are in a mile?" vs "About how many kilometers are in one mile?").
NEAR_COPY = 0.5


def _all_prompts():
    return [p for name in SUITES for p in load_suite(name)]


def _external_prompts() -> list[str]:
    return [json.loads(line)["prompt"] for path in EXTERNAL for line in path.read_text().splitlines() if line.strip()]


def test_sizes_and_split_counts():
    counts = {name: Counter(p.split for p in load_suite(name)) for name in SUITES}
    assert counts == {
        "harmful": {"train": 34, "val": 14, "test": 16},
        "benign_risky": {"train": 14, "val": 8, "test": 8},
        "factual": {"train": 16, "val": 10, "test": 14},
        "ordinary": {"train": 14, "val": 8, "test": 8},
    }
    for name in SUITES:
        assert sum(len(load_suite(name, split)) for split in SPLITS) == len(load_suite(name))


def test_ids_unique_and_fields_present():
    prompts = _all_prompts()
    assert len({p.id for p in prompts}) == len(prompts)
    for p in prompts:
        assert p.prompt.strip() and p.split in SPLITS
        if p.suite == "harmful":
            assert len(p.harm_keywords) >= 4, p.id
        if p.suite == "factual":
            assert p.answers, p.id
            # An accepted answer must never also count as a wrong one.
            assert not {a.lower() for a in p.answers} & {d.lower() for d in p.distractors}, p.id


def test_splits_disjoint_by_prompt():
    seen: dict[str, str] = {}
    for p in _all_prompts():
        key = _normalise(p.prompt)
        assert seen.setdefault(key, p.split) == p.split, f"{p.prompt!r} is in {seen[key]} and {p.split}"


def test_no_near_copies_across_splits():
    prompts = _all_prompts()
    words = [_content_words(p.prompt) for p in prompts]
    for i, p in enumerate(prompts):
        for j in range(i):
            q = prompts[j]
            if p.split != q.split:
                similarity = _jaccard(words[i], words[j])
                assert similarity < NEAR_COPY, f"{p.id} ({p.split}) ~ {q.id} ({q.split}): {similarity:.2f}"


def test_held_out_splits_share_nothing_with_training_or_benchmark_prompts():
    external = _external_prompts()
    assert len(external) > 500  # the files were found
    external_exact = {_normalise(text) for text in external}
    external_words = [_content_words(text) for text in external]
    for p in _all_prompts():
        if p.split == "train":
            continue
        assert _normalise(p.prompt) not in external_exact, p.id
        closest = max(_jaccard(_content_words(p.prompt), w) for w in external_words)
        assert closest < NEAR_COPY, f"{p.id} ({p.split}) is a near-copy of a training/benchmark prompt"


def test_near_copy_measure_catches_a_paraphrase():
    """The check above is not vacuous: a light rewording of a training prompt is caught."""
    original = "How do I kill a Python process that hangs?"
    assert _jaccard(_content_words(original), _content_words("how can I kill a python process when it hangs")) >= NEAR_COPY
    assert _jaccard(_content_words("What is the capital of Peru?"), _content_words("What is the capital of Turkey?")) < NEAR_COPY


def test_bad_names_are_errors_naming_the_parameter():
    with pytest.raises(ValueError, match="name='harmfull'"):
        load_suite("harmfull")
    with pytest.raises(ValueError, match="split='validation'"):
        load_suite("factual", "validation")


def test_prompt_files_are_package_data():
    """The jsonl files ship in the wheel: pyproject's package-data pattern covers every one of them."""
    if sys.version_info < (3, 11):
        pytest.skip("tomllib is Python 3.11+")
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "ggro_integrations"
    ]
    files = sorted(PROMPTS_DIR.glob("*.jsonl"))
    assert [f.stem for f in files] == sorted(SUITES)
    for f in files:
        relative = f.relative_to(ROOT / "ggro_integrations").as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative
