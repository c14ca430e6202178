"""Shared fixtures: tiny random policies and reward models built in-process (no hub)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from ggro_integrations.testing import tiny_causal_lm, tiny_reward_model, tiny_tokenizer

if os.environ.get("OMP_NUM_THREADS"):
    # torch already read it; say so explicitly so a test module that changes threads can restore it.
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def other_tokenizer():
    """A tokenizer with a genuinely different vocabulary."""
    return tiny_tokenizer(vocab_size=512, seed=7)


@pytest.fixture(scope="session", params=["llama", "qwen2"])
def arch(request):
    return request.param


@pytest.fixture(scope="session")
def policy(tokenizer):
    return tiny_causal_lm(tokenizer, "llama")


@pytest.fixture(scope="session")
def reward_hf_model(tokenizer):
    return tiny_reward_model(tokenizer, "llama")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread (and far faster than two on a shared, busy CPU)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
