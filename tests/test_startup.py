"""Start-up cost: ``import ggro_integrations``, ``ggro --help``, ``--version`` and argument errors
import neither torch nor transformers (3–5 s on a small machine); the lazy package attributes still
resolve to the real objects. Each check runs in a fresh interpreter (about 0.3 s each)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "langchain_core", "llama_index")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _imported_modules(code: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """Run ``code`` in a fresh interpreter; the top-level modules it imported (from -X importtime)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, env=ENV, timeout=120
    )
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names, proc


def _cli(*argv: str) -> str:
    return f"import sys; from ggro_integrations.cli import main; sys.exit(main({list(argv)!r}))"


@pytest.mark.parametrize(
    "code, status",
    [
        ("import ggro_integrations", 0),
        ("from ggro_integrations import GGROConfig, ConfigError, InterventionEvent, __version__", 0),
        (_cli("--help"), 0),
        (_cli("generate", "--help"), 0),
        (_cli("--version"), 0),
        (_cli("generate", "hi", "--entropy-treshold", "2"), 2),
        (_cli("generate", "hi", "--max-new-tokens", "0"), 2),
        (_cli("generate", "hi", "--compare", "beam"), 2),
        (_cli("generate"), 2),
    ],
)
def test_no_torch_before_it_is_needed(code, status):
    modules, proc = _imported_modules(code)
    assert proc.returncode == status, proc.stderr[-2000:]
    assert "ggro_integrations" in modules  # the measurement saw the package itself
    assert not modules & set(HEAVY), f"{code!r} imported {sorted(modules & set(HEAVY))}"


def test_the_heavy_names_import_torch_on_first_use():
    # The control for the test above: the same measurement does see torch when a call needs it.
    modules, proc = _imported_modules("from ggro_integrations import build_decoder")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {"torch", "transformers"} <= modules


LAZY_PACKAGES = ["ggro_integrations", "ggro_integrations.decoding", "ggro_integrations.default_model"]


@pytest.mark.parametrize("name", LAZY_PACKAGES)
def test_every_public_name_resolves(name):
    package = importlib.import_module(name)
    for attr in package.__all__:
        value = getattr(package, attr)
        if hasattr(value, "__module__") and not isinstance(value, str):
            # The object the defining module has, not a copy or a proxy.
            assert getattr(importlib.import_module(value.__module__), attr, value) is value
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        package.no_such_name  # noqa: B018


def test_star_import_and_from_import():
    namespace: dict[str, object] = {}
    exec("from ggro_integrations import *", namespace)
    from ggro_integrations import GGRODecoder, build_decoder
    from ggro_integrations.decoding.decoder import GGRODecoder as defined
    from ggro_integrations.factory import build_decoder as defined_factory

    assert namespace["GGRODecoder"] is GGRODecoder is defined
    assert namespace["build_decoder"] is build_decoder is defined_factory
