"""Loader options shared by every model loader: dtype, device, "path or hub id", safe loading.

The policy loader (``policies.py``), the reward registry and ``HFRewardModel.from_pretrained``
all read their ``device`` / ``dtype`` / model-spec arguments through these functions, so a
value one of them accepts is accepted by all (``build_decoder(dtype="bf16")`` loads both
models in bfloat16) and they agree on what is a local path and what is a hub id.

Framework-free: torch, transformers and the standard library only.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers.utils import logging as hf_logging

from .errors import ConfigError

__all__ = [
    "ModelSource",
    "device_name",
    "parse_dtype",
    "pretrained_kwargs",
    "progress_bars",
    "resolve_source",
]

# Aliases people type; any other name is looked up on ``torch`` (``"float64"``, ``"double"``).
_DTYPE_ALIASES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "half": torch.float16,
    "fp64": torch.float64,
}

# A hub id is ``org/name``: one slash, hub-legal characters.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | Literal["auto"] | None:
    """A floating-point ``torch.dtype``, ``"auto"`` (the checkpoint's own) or ``None`` (loader default).

    Accepts ``torch.bfloat16``, ``"bfloat16"``, ``"torch.bfloat16"``, ``"bf16"``, ``"fp16"``,
    ``"half"``, ``"float64"``, ... Raises ``ConfigError`` for anything else: integer dtypes
    cannot run a model, and a typo must not load weights in the wrong precision.
    """
    if dtype is None:
        return None
    if isinstance(dtype, str):
        name = dtype.strip().lower().removeprefix("torch.")
        if name == "auto":
            return "auto"
        resolved = _DTYPE_ALIASES.get(name, getattr(torch, name, None))
    else:
        resolved = dtype
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ConfigError(
            f"dtype {dtype!r} is not a floating-point torch dtype; use a torch.dtype or one of "
            "'float32', 'bfloat16' ('bf16'), 'float16' ('fp16'), 'float64', 'auto'."
        )
    return resolved


def dtype_name(dtype: torch.dtype | str | None) -> str | None:
    """The canonical name of ``dtype`` (``"bfloat16"`` for ``torch.bfloat16``, ``"bf16"`` or
    ``"torch.bfloat16"``; ``"auto"``), validated; ``None`` when not given. Adapters keep names in
    their fields: serialisable, and the same registry cache key as the dtype itself."""
    parsed = parse_dtype(dtype)
    return parsed if parsed is None or parsed == "auto" else str(parsed).removeprefix("torch.")


def device_name(device: str | torch.device | None) -> str | None:
    """The canonical name of ``device`` (``"cpu"``, ``"cuda:0"``), or ``None`` when not given.

    Canonical names make ``"cpu"`` and ``torch.device("cpu")`` one cache key. Each loader
    decides what ``None`` means (the policy loader: CPU).
    """
    if device is None:
        return None
    try:
        return str(torch.device(device))
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(
            f"device {device!r} is not a torch device; use e.g. 'cpu', 'cuda', 'cuda:1' or 'mps'."
        ) from exc


@dataclass(frozen=True)
class ModelSource:
    """Where a model spec points."""

    kind: Literal["local", "hub", "missing", "name"]
    """``"local"``: an existing path; ``"hub"``: an ``org/name`` id; ``"missing"``: shaped like a
    path but absent; ``"name"``: a bare word (a registered name, or a legacy hub id like ``gpt2``)."""
    location: str
    """The absolute path for ``"local"`` / ``"missing"``, else the spec itself."""


def _looks_like_path(spec: str) -> bool:
    # Hub ids are ``name`` or ``org/name``: anything starting with ``.``, ``/`` or ``~``, absolute
    # paths, Windows separators and strings with more than one ``/`` can only be paths.
    if spec.startswith((".", "/", "~")) or os.path.isabs(spec):
        return True
    if "\\" in spec or (os.sep != "/" and os.sep in spec):
        return True
    return spec.count("/") > 1


def resolve_source(spec: str) -> ModelSource:
    """Classify a model spec: an existing path wins; a path-shaped string that does not exist is
    ``"missing"`` (never sent to the hub); ``org/name`` is a hub id; a bare word is a ``"name"``."""
    expanded = os.path.expanduser(spec)
    if os.path.exists(expanded):
        return ModelSource("local", os.path.abspath(expanded))
    if _looks_like_path(spec):
        return ModelSource("missing", os.path.abspath(expanded))
    if _HUB_ID.match(spec):
        return ModelSource("hub", spec)
    return ModelSource("name", spec)


def pretrained_kwargs(source: str, *, dtype: Any, trust_remote_code: bool) -> dict[str, Any]:
    """Keyword arguments for ``from_pretrained``: safe by default.

    No remote code unless asked; and a local directory holding safetensors weights never
    falls back to pickle ``.bin`` files (which can run code when loaded).
    """
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if os.path.isdir(source) and any(name.endswith(".safetensors") for name in os.listdir(source)):
        kwargs["use_safetensors"] = True
    return kwargs


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """Show (``True``: leave as they are) or hide transformers' own progress bars for a block.

    The one switch for loading progress: the loaders use it for ``progress=False`` and the
    CLI uses it to hide per-load bars.
    """
    was_enabled = hf_logging.is_progress_bar_enabled()
    if not enabled and was_enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if not enabled and was_enabled:
            hf_logging.enable_progress_bar()
