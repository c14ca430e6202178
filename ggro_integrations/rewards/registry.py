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

import inspect
import threading
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import torch

from ..errors import RewardModelError
from ..loading import device_name, parse_dtype, resolve_source
from .base import RewardModel
from .composite import CompositeReward, check_components
from .hf import HFRewardModel

RewardFactory = Callable[..., RewardModel]
"""Called with those of ``device=``, ``dtype=``, ``trust_remote_code=`` it accepts; returns a ``RewardModel``."""

DEFAULT_ALIAS = "default"

FACTORY_OPTIONS = ("device", "dtype", "trust_remote_code")
"""The keyword arguments a factory may take (it is passed only the ones it accepts)."""

# One short lock for the dicts; one lock per cache key for the (slow) build, so a cache hit never
# waits for another model's weights to load, and two threads asking for one model build it once.
_lock = threading.Lock()
_factories: dict[str, RewardFactory] = {}
_cache: dict[Hashable, RewardModel] = {}
_key_locks: dict[Hashable, threading.Lock] = {}
_loads: Counter[str] = Counter()


def _load_default(*, device: Any = None, dtype: Any = None, trust_remote_code: bool = False) -> RewardModel:
    """The package's default reward head (imported when first used: it loads the default policy).

    ``trust_remote_code`` is accepted and has no effect: the default runs no remote code.
    """
    from ..default_model.reward import load_default_reward_model

    return load_default_reward_model(device=device, dtype=dtype)


def _ensure_builtins() -> None:
    from ..default_model.reward import DEFAULT_REWARD_NAME

    with _lock:
        _factories.setdefault(DEFAULT_ALIAS, _load_default)
        # Same factory object: the alias and "default" share one cache entry.
        _factories.setdefault(DEFAULT_REWARD_NAME, _load_default)


def _factory_options(name: str, factory: RewardFactory) -> frozenset[str] | None:
    """The options ``factory`` takes (None: all of them, via ``**kwargs`` or an unreadable signature).

    Raises ``RewardModelError`` when it needs an argument the registry cannot give.
    """
    try:
        parameters = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return None  # a builtin or C callable: pass everything, as documented
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    required = [
        p.name
        for p in parameters
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL,)
        and (p.name not in FACTORY_OPTIONS or p.kind is inspect.Parameter.POSITIONAL_ONLY)
    ]
    if required:
        raise RewardModelError(
            f"factory for reward model {name!r} requires argument(s) {required}, which the registry cannot give. "
            "A factory is called with no arguments, or with any of the keyword arguments device=, dtype=, "
            f"trust_remote_code= it declares (or **kwargs): e.g. `lambda **kw: HFRewardModel(...)`; its "
            f"signature is {inspect.signature(factory)}."
        )
    return frozenset(
        p.name for p in parameters if p.name in FACTORY_OPTIONS and p.kind is not inspect.Parameter.POSITIONAL_ONLY
    )


def register_reward_model(name: str, factory: RewardFactory, *, overwrite: bool = False) -> None:
    """Register ``factory`` under ``name`` so ``load_reward_model(name)`` builds (and caches) it.

    ``factory`` is called with those of the keyword arguments ``device``, ``dtype`` and
    ``trust_remote_code`` that it declares (``lambda: ...`` gets none, ``**kwargs`` gets all)
    and must return a ``RewardModel``. Asking it for a device, dtype or remote code it cannot
    take is an error, not a silent default.
    """
    if not isinstance(name, str) or not name.strip():
        raise RewardModelError(f"reward model name must be a non-empty string; got {name!r}.")
    if not callable(factory):
        raise RewardModelError(f"factory for reward model {name!r} must be callable; got {type(factory).__name__}.")
    _factory_options(name, factory)  # a factory the registry cannot call fails now, not at the first load
    _ensure_builtins()
    with _lock:
        if name in _factories and not overwrite and _factories[name] is not factory:
            raise RewardModelError(
                f"reward model name {name!r} is already registered; pass overwrite=True to replace it."
            )
        old = _factories.get(name)
        _factories[name] = factory
        if old is not None and old is not factory:
            _drop_built_by(old)


def _drop_built_by(factory: RewardFactory) -> None:
    """Forget the models ``factory`` built (call with ``_lock`` held)."""
    for key in [k for k in _cache if k[0] == "name" and k[1] is factory]:
        del _cache[key]


def unregister_reward_model(name: str) -> None:
    """Remove ``name`` from the registry (and drop the models its factory built)."""
    with _lock:
        factory = _factories.pop(name, None)
        if factory is None:
            pass
        elif factory not in _factories.values():
            _drop_built_by(factory)
    if factory is None:
        raise _unknown(name)


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
        _key_locks.clear()
        _loads.clear()


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
    dev, dt = device_name(device), parse_dtype(dtype)
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
        options = {"device": dev, "dtype": dt, "trust_remote_code": trust_remote_code}
        return _cached(key, name, lambda: _call_factory(name, factory, options))
    source = resolve_source(name)
    if source.kind == "missing":
        raise RewardModelError(f"reward model path {name!r} does not exist; check the path.")
    if source.kind == "name":
        raise _unknown(name)

    def build() -> RewardModel:
        return HFRewardModel.from_pretrained(
            source.location, device=dev, dtype=dt, trust_remote_code=trust_remote_code, name=name
        )

    return _cached(("hf", source.location, dev, dt, trust_remote_code), name, build)


def _call_factory(name: str, factory: RewardFactory, options: dict[str, Any]) -> RewardModel:
    accepted = _factory_options(name, factory)
    if accepted is None:
        return factory(**options)
    # Options at their "no preference" value are simply not passed; a real request the factory
    # cannot honour is refused rather than ignored.
    refused = {k: v for k, v in options.items() if k not in accepted and v not in (None, False)}
    if refused:
        wanted = ", ".join(f"{k}={v!r}" for k, v in refused.items())
        raise RewardModelError(
            f"reward model {name!r} was asked for {wanted}, but its factory takes no such argument; register a "
            f"factory that accepts {', '.join(sorted(refused))}= (or **kwargs) and uses it."
        )
    return factory(**{k: v for k, v in options.items() if k in accepted})


def _cached(key: Hashable, label: str, build: Callable[[], RewardModel]) -> RewardModel:
    with _lock:
        model = _cache.get(key)
        if model is not None:
            return model
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        with _lock:
            model = _cache.get(key)  # built by another thread while we waited
        if model is not None:
            return model
        model = build()
        if not isinstance(model, RewardModel):
            raise RewardModelError(
                f"the factory for reward model {label!r} returned {type(model).__name__}, not a RewardModel."
            )
        with _lock:
            _cache[key] = model
            _loads[label] += 1
        return model


def _load_composite(
    spec: Mapping[Any, Any], device: Any, dtype: Any, trust_remote_code: bool, allow_negative: bool
) -> RewardModel:
    if not spec:
        raise RewardModelError("reward_model mapping is empty; give at least one {name: weight} entry.")
    components = check_components(spec, allow_negative)  # before loading any weights
    # Instances are hashable by identity; holding them in the key keeps ids from being reused.
    key = ("composite", tuple(spec.items()), device, dtype, trust_remote_code, allow_negative)
    try:
        hash(key)
    except TypeError as exc:
        raise RewardModelError(f"reward_model mapping keys and weights must be hashable: {exc}") from exc

    def build() -> RewardModel:
        loaded = [
            (load_reward_model(member, device=device, dtype=dtype, trust_remote_code=trust_remote_code), weight, name)
            for member, weight, name in components
        ]
        return CompositeReward(loaded, allow_negative=allow_negative)

    label = "{" + ", ".join(f"{name}: {weight}" for _, weight, name in components) + "}"
    return _cached(key, label, build)
