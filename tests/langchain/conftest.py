"""Fixtures for the LangChain adapter tests: tiny random models from ``lc_tiny`` (nothing from a hub)."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests must never send traces anywhere, whatever the developer's shell exports.
for _var in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGSMITH_API_KEY", "LANGCHAIN_API_KEY"):
    os.environ.pop(_var, None)

sys.path.insert(0, os.path.dirname(__file__))  # for `import lc_tiny`

import pytest
import torch

pytest.importorskip("langchain_core")

# Tiny models gain nothing from intra-op threads, and on a shared 2-core machine two spinning
# OpenMP threads make a 0.2 s generation take seconds.
torch.set_num_threads(1)

from lc_tiny import parts, scripted_decoder, tiny_decoder


@pytest.fixture(scope="session")
def tiny_parts():
    return parts()


@pytest.fixture
def decoder():
    return tiny_decoder()


@pytest.fixture
def chat(decoder):
    from ggro_integrations.langchain import ChatGGRO

    return ChatGGRO(decoder=decoder)


@pytest.fixture
def llm(decoder):
    from ggro_integrations.langchain import GGROLLM

    return GGROLLM(decoder=decoder)


@pytest.fixture
def scripted():
    """``scripted(script_for, **config)``: a decoder whose policy writes ``script_for(prompt)``."""
    return scripted_decoder
