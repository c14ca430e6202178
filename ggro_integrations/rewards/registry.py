"""Choosing a reward model by name: the registry and the one resolver, ``load_reward_model``.

``load_reward_model(spec)`` accepts a registered name (``"default"``), a hub id
(``"org/name"``) or local path, a ``RewardModel`` instance, or a ``{spec: weight}``
mapping (a ``CompositeReward``). Loaded models are cached by (spec, device,
dtype, trust_remote_code), so switching reward models by name on every call
never reloads weights.

Example:
    >>> register_reward_model("mine", lambda **kw: HFRewardModel.from_pretrained("/models/rm", **kw))  # doctest: +SKIP
    >>> load_reward_model("mine") is load_reward_model("mine")  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import torch

from ..errors import RewardModelError
from .base import RewardModel

RewardFactory = Callable[..., RewardModel]
"""Called as ``factory(device=..., dtype=..., trust_remote_code=...)``; returns a ``RewardModel``."""

DEFAULT_ALIAS = "default"

# A hub id is ``org/name`` (one slash, hub-legal characters); anything else that
# is neither registered nor an existing path is an unknown name, not a download.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

_lock = threading.RLock()
_factories: dict[str, RewardFactory] = {}
_cache: dict[Hashable, RewardModel] = {}
_loads: Counter[str] = Counter()


def _load_default(*, device: Any = None, dtype: Any = None, **_: Any) -> RewardModel:
    """The package's default reward head (imported lazily: it pulls in the default policy)."""
    try:
        from .default import load_default_reward_model
    except ImportError as exc:
        raise RewardModelError(
            f"the default reward model is unavailable ({exc}); pass a reward model id, path or instance instead."
        ) from exc
    return load_default_reward_model(device=device, dtype=dtype)


def _default_alias() -> str | None:
    """The default reward's descriptive name, when its module is importable."""
    try:
        from .default import DEFAULT_REWARD_NAME
    except Exception:  # noqa: BLE001 - a missing or broken optional module must not break the registry
        return None
    return str(DEFAULT_REWARD_NAME)


def _ensure_builtins() -> None:
    with _lock:
        _factories.setdefault(DEFAULT_ALIAS, _load_default)
        alias = _default_alias()
        if alias and alias not in _factories:
            # Same factory object: the alias and "default" share one cache entry.
            _factories[alias] = _load_default


def register_reward_model(name: str, factory: RewardFactory, *, overwrite: bool = False) -> None:
    """Register ``factory`` under ``name`` so ``load_reward_model(name)`` builds (and caches) it.

    ``factory`` is called with keyword arguments ``device``, ``dtype`` and
    ``trust_remote_code`` (accept ``**kwargs`` to ignore them) and must return a
    ``RewardModel``.
    """
    if not isinstance(name, str) or not name.strip():
        raise RewardModelError(f"reward model name must be a non-empty string; got {name!r}.")
    if not callable(factory):
        raise RewardModelError(f"factory for reward model {name!r} must be callable; got {type(factory).__name__}.")
    _ensure_builtins()
    with _lock:
        if name in _factories and not overwrite and _factories[name] is not factory:
            raise RewardModelError(
                f"reward model name {name!r} is already registered; pass overwrite=True to replace it."
            )
        old = _factories.get(name)
        _factories[name] = factory
        if old is not None and old is not factory:
            # Drop models the replaced factory built, so the new one is used from now on.
            for key in [k for k in _cache if k[0] == "name" and k[1] is old]:
                del _cache[key]


def unregister_reward_model(name: str) -> None:
    """Remove ``name`` from the registry (and drop the models its factory built)."""
    with _lock:
        factory = _factories.pop(name, None)
        if factory is None:
            raise _unknown(name)
        if factory not in _factories.values():
            for key in [k for k in _cache if k[0] == "name" and k[1] is factory]:
                del _cache[key]


def list_reward_models() -> list[str]:
    """Registered reward-model names, sorted."""
    _ensure_builtins()
    with _lock:
        return sorted(_factories)


def reward_load_count(spec: str | None = None) -> int:
    """How many times a reward model was actually built (cache misses): for ``spec``, or in total."""
    with _lock:
        return _loads[spec] if spec is not None else sum(_loads.values())


def clear_reward_cache() -> None:
    """Forget every cached reward model (and reset the load counters)."""
    with _lock:
        _cache.clear()
        _loads.clear()


def _norm_device(device: Any) -> str | None:
    return None if device is None else str(torch.device(device))


def _norm_dtype(dtype: Any) -> Any:
    if isinstance(dtype, str) and dtype != "auto":
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise RewardModelError(f"dtype {dtype!r} is not a torch dtype; use e.g. 'float32' or 'bfloat16'.")
        return resolved
    return dtype


def _is_path(spec: str) -> bool:
    return os.path.exists(os.path.expanduser(spec))


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec


def _unknown(spec: str) -> RewardModelError:
    names = ", ".join(repr(n) for n in list_reward_models())
    return RewardModelError(
        f"unknown reward model {spec!r}. Registered names: {names}. "
        "Pass a registered name, a hub id ('org/name'), an existing local path, a RewardModel, "
        "or a {name: weight} mapping; register your own with register_reward_model(name, factory)."
    )


def load_reward_model(
    spec: Any,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    allow_negative: bool = False,
) -> RewardModel:
    """Resolve ``spec`` into a (cached) ``RewardModel``.

    ``spec`` is a registered name, a hub id (``"org/name"``) or local path, a
    ``RewardModel`` (returned unchanged), or a ``{spec: weight}`` mapping (a
    weighted ``CompositeReward``; ``allow_negative=True`` permits negative weights).
    """
    if isinstance(spec, RewardModel):
        return spec
    dev, dt = _norm_device(device), _norm_dtype(dtype)
    if isinstance(spec, Mapping):
        return _load_composite(spec, dev, dt, trust_remote_code, allow_negative)
    if not isinstance(spec, str):
        raise RewardModelError(
            f"reward_model must be a name, hub id, path, RewardModel or {{name: weight}} mapping; "
            f"got {type(spec).__name__}."
        )
    name = spec.strip()
    if not name:
        raise _unknown(spec)
    _ensure_builtins()
    with _lock:
        factory = _factories.get(name)
    if factory is not None:
        key: tuple[Hashable, ...] = ("name", factory, dev, dt, trust_remote_code)

        def build() -> RewardModel:
            return factory(device=dev, dtype=dt, trust_remote_code=trust_remote_code)

    elif _is_path(name) or _HUB_ID.match(name):
        path = os.path.abspath(os.path.expanduser(name)) if _is_path(name) else name
        key = ("hf", path, dev, dt, trust_remote_code)

        def build() -> RewardModel:
            from .hf import HFRewardModel

            return HFRewardModel.from_pretrained(
                path, device=dev, dtype=dt, trust_remote_code=trust_remote_code, name=name
            )

    elif _looks_like_path(name):
        raise RewardModelError(f"reward model path {name!r} does not exist; check the path.")
    else:
        raise _unknown(name)
    return _cached(key, name, build)


def _cached(key: Hashable, label: str, build: Callable[[], RewardModel]) -> RewardModel:
    # One lock for lookups and loads: two threads asking for the same model build it
    # once. RLock, because a composite's load resolves its components re-entrantly.
    with _lock:
        model = _cache.get(key)
        if model is None:
            model = build()
            if not isinstance(model, RewardModel):
                raise RewardModelError(
                    f"the factory for reward model {label!r} returned {type(model).__name__}, not a RewardModel."
                )
            _cache[key] = model
            _loads[label] += 1
        return model


def _load_composite(
    spec: Mapping[Any, Any], device: Any, dtype: Any, trust_remote_code: bool, allow_negative: bool
) -> RewardModel:
    from .composite import CompositeReward, check_weight

    if not spec:
        raise RewardModelError("reward_model mapping is empty; give at least one {name: weight} entry.")
    items = tuple(spec.items())
    for k, w in items:
        check_weight(str(getattr(k, "name", k)), w, allow_negative)  # before loading any weights
    # Instances are hashable by identity; holding them in the key keeps ids from being reused.
    key = ("composite", items, device, dtype, trust_remote_code, allow_negative)
    try:
        hash(key)
    except TypeError as exc:
        raise RewardModelError(f"reward_model mapping keys and weights must be hashable: {exc}") from exc

    def build() -> RewardModel:
        components = {
            k: load_reward_model(k, device=device, dtype=dtype, trust_remote_code=trust_remote_code) for k, _ in items
        }
        return CompositeReward(
            [(components[k], w, k if isinstance(k, str) else components[k].name) for k, w in items],
            allow_negative=allow_negative,
        )

    label = "{" + ", ".join(f"{k if isinstance(k, str) else getattr(k, 'name', k)}: {w}" for k, w in items) + "}"
    return _cached(key, label, build)
