"""Small helpers over transformers' KV caches, tolerant of API drift.

transformers renamed ``past_key_values`` to ``cache`` and changed ``crop`` to
take the number of tokens to remove; these helpers hide both differences so the
decoder and the reward models read the same on every supported version.
"""

from __future__ import annotations

import copy
import inspect
from functools import lru_cache
from typing import Any

import torch
from transformers import DynamicCache


@lru_cache(maxsize=None)
def _cache_kwarg_for(cls: type) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(module: torch.nn.Module, cache: Any) -> dict[str, Any]:
    """Keyword arguments that pass ``cache`` to ``module.forward``."""
    return {_cache_kwarg_for(type(module)): cache, "use_cache": True}


def new_cache(config: Any) -> DynamicCache:
    """An empty dynamic cache for a model with ``config``."""
    try:
        return DynamicCache(config=config)
    except TypeError:  # older transformers
        return DynamicCache()


def cache_length(cache: Any) -> int:
    """Number of positions the cache holds."""
    return 0 if cache is None else int(cache.get_seq_length())


@lru_cache(maxsize=None)
def _crop_takes_removal(cls: type) -> bool:
    return "tokens_to_remove" in inspect.signature(cls.crop).parameters


def crop_cache(cache: Any, length: int) -> None:
    """Shrink ``cache`` in place so that it holds exactly ``length`` positions."""
    current = cache_length(cache)
    if length > current:
        raise ValueError(f"cannot crop a cache of {current} positions to {length}")
    if length == current:
        return
    if _crop_takes_removal(type(cache)):
        cache.crop(length - current)
    else:
        cache.crop(length)


def fork_cache(cache: Any, batch_size: int = 1) -> Any:
    """An independent copy of a single-row ``cache`` repeated ``batch_size`` times."""
    forked = copy.deepcopy(cache)
    if batch_size > 1:
        forked.batch_repeat_interleave(batch_size)
    return forked


def select_row(cache: Any, row: int) -> None:
    """Keep only batch row ``row`` of ``cache``, in place."""
    cache.batch_select_indices(torch.tensor([row]))
