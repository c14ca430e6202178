"""Lazy package attributes (PEP 562), so importing a package costs only what the caller uses.

``import ggro_integrations`` and ``ggro --help`` must not import torch (3–5 s on a small
machine): a package lists its public names and the module each comes from, and the module is
imported on first access. ``from ggro_integrations import build_decoder`` works as before.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``exports`` maps a public name to the
    (relative) module that defines it, e.g. ``{"GGRODecoder": ".decoding"}``."""

    def __getattr__(name: str) -> Any:
        module_name = exports.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_name, package), name)
        # Cache it on the package, so the next access is a plain attribute lookup.
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
