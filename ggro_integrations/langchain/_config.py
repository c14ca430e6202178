"""Chain-level configuration: a GGRO model reads its options from ``config["configurable"]`` itself.

LangChain's own mechanism (``configurable_fields``) re-creates a model for each
call and drops every ``configurable`` key no field declares, without a word.
So ``ChatGGRO`` / ``GGROLLM`` read their options from the call's config in
their public ``invoke``/``ainvoke``/``stream``/``astream`` (and ``batch`` /
``stream_events(version="v3")`` where LangChain bypasses those), under
``configurable_prefix + name``, and turn them into call keyword arguments:

    field < configurable < bind() / per-call keyword

so traces' invocation params show the values in effect. A key that looks like
a GGRO option but that no GGRO model reads warns (``GGROConfigWarning``)
instead of being ignored silently; keys of LangGraph and other runnables do not.
"""

from __future__ import annotations

import difflib
import sys
import warnings
from typing import Any

from langchain_core.runnables import ConfigurableFieldSpec, RunnableConfig

from ..decoding.call import ALIASES
from ..options import KNOBS

CONFIGURABLE: tuple[str, ...] = (*KNOBS, "reward_model", "strategy")
"""The options a GGRO model reads from ``config["configurable"]``: every GGROConfig knob, the reward
model and the strategy (``max_tokens`` is read too, as ``max_new_tokens``)."""

_NAMES: tuple[str, ...] = (*CONFIGURABLE, *ALIASES)
# Substrings only GGRO's options use: a key containing one is GGRO-looking however far it is from a name.
_GGRO_STEMS = ("entropy", "nudge", "refine", "reward", "ggro", "best_of", "segment")
# Every configurable_prefix a GGRO model was built with: a key one of them reads is nobody's typo.
_PREFIXES: set[str] = set()


class GGROConfigWarning(UserWarning):
    """A ``config["configurable"]`` key looks like a GGRO option, but no GGRO model reads it."""


def register_prefix(prefix: str) -> None:
    """Note that a GGRO model reads keys starting with ``prefix`` (so they are not reported as typos)."""
    _PREFIXES.add(prefix)


def configured_options(prefix: str, config: RunnableConfig) -> dict[str, Any]:
    """The GGRO options ``config["configurable"]`` sets for a model with ``prefix`` (``None`` values
    mean "not set"); warns about GGRO-looking keys no GGRO model reads."""
    register_prefix(prefix)  # also for a model built without validation (model_copy, model_construct)
    options: dict[str, Any] = {}
    for key, value in (config.get("configurable") or {}).items():
        name = key[len(prefix) :] if key.startswith(prefix) else None
        if name in _NAMES:
            if value is not None:
                options[ALIASES.get(name, name)] = value
            continue
        hint = _near_miss(key)
        if hint is not None:
            fix = f" Did you mean {hint!r}?" if hint else ""
            warnings.warn(
                f"config['configurable'] key {key!r} is not a GGRO option, so no GGRO model reads it.{fix} "
                f"GGRO options (after a model's configurable_prefix): {', '.join(CONFIGURABLE)}. "
                "If another runnable reads this key, filter GGROConfigWarning.",
                GGROConfigWarning,
                stacklevel=_caller_level(),
            )
    return options


def _caller_level() -> int:
    """The ``stacklevel`` that attributes a warning to the code that called the GGRO model (the first
    frame outside this package), however deep the call path (invoke, stream, batch, v3 events)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("ggro_integrations."):
        frame, level = frame.f_back, level + 1
    return level


def with_configured(
    prefix: str, config: RunnableConfig, stop: list[str] | None, kwargs: dict[str, Any]
) -> tuple[list[str] | None, dict[str, Any]]:
    """``(stop, kwargs)`` of one call with the configured options under the call's own keywords."""
    options = configured_options(prefix, config)
    configured_stop = options.pop("stop", None)  # LangChain's `stop` is a parameter, not a keyword
    return (stop if stop is not None else configured_stop), {**options, **kwargs}


def _read_by_some_ggro_model(key: str) -> bool:
    return any(key.startswith(p) and key[len(p) :] in _NAMES for p in tuple(_PREFIXES))  # (a snapshot: thread-safe)


def _near_miss(key: str) -> str | None:
    """For a key no GGRO model reads: the key it was probably meant to be ('' when it is GGRO-looking
    but close to none), or None when it is not GGRO-looking (another runnable's, LangGraph's)."""
    if key.startswith("__") or _read_by_some_ggro_model(key):
        return None
    ggro_looking = any(stem in key.lower() for stem in _GGRO_STEMS)
    read = sorted({p + ALIASES.get(n, n) for p in tuple(_PREFIXES) for n in _NAMES})
    if ggro_looking:
        # An abbreviation (nudge_temp, entropy, min_segment) names the shortest option containing it.
        containing = [name for name in read if key in name]
        if containing:
            return min(containing, key=len)
    # Otherwise a close spelling; without a GGRO stem only a near-identical one (temprature, strategey),
    # so that other runnables' keys (top_k, model, k, user_id, thread_id) pass.
    close = difflib.get_close_matches(key, read, n=1, cutoff=0.65 if ggro_looking else 0.85)
    if close:
        return close[0]
    return "" if ggro_looking else None


def config_specs(model: Any) -> list[ConfigurableFieldSpec]:
    """One spec per option a GGRO model reads, so ``chain.config_schema()`` lists them.

    ``default=None`` ("the model's own setting"): two GGRO models with different field values then
    declare equal specs, which LangChain accepts in one chain.
    """
    fields = type(model).model_fields
    return [
        ConfigurableFieldSpec(
            id=model.configurable_prefix + name,
            name=name,
            description=fields[name].description,
            annotation=fields[name].annotation,
            default=None,
        )
        for name in CONFIGURABLE
    ]
