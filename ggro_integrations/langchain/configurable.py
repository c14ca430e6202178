"""``configurable_ggro``: every GGRO knob of a model settable per call through LangChain's config."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.runnables import ConfigurableField, Runnable
from langchain_core.runnables.configurable import RunnableConfigurableFields

from ..errors import ConfigError
from ._base import KNOBS, GGROFields

CONFIGURABLE = (*KNOBS, "reward_model", "strategy")
"""What ``configurable_ggro`` exposes by default: every GGROConfig knob, the reward model and the strategy."""


class ConfigurableGGRO(RunnableConfigurableFields):
    """A configurable GGRO model whose ``bind_tools`` keeps it configurable.

    (LangChain forwards ``bind_tools`` on a configurable model to the default
    instance, which silently drops the configurable fields.)
    """

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable:
        """Validate and format ``tools`` as ``ChatGGRO.bind_tools`` does, then bind them to this configurable model."""
        bound = self.default.bind_tools(tools, **kwargs)  # type: ignore[attr-defined]
        return self.bind(**bound.kwargs)  # type: ignore[attr-defined]


def configurable_ggro(model: GGROFields, fields: Iterable[str] | None = None, *, prefix: str = "") -> ConfigurableGGRO:
    """``model.configurable_fields(...)`` for every GGRO knob, with ids ``prefix + name``.

    LangChain re-creates the model for a call that sets a value; the decoder (a
    public field) is reused and reward models named per call come from the
    registry's cache, so nothing is reloaded.

    Example:
        >>> chat = configurable_ggro(ChatGGRO(decoder=decoder))                                         # doctest: +SKIP
        >>> chat.with_config(configurable={"entropy_threshold": 3.0, "reward_model": "strict"}).invoke(q)  # doctest: +SKIP
    """
    names = list(fields) if fields is not None else list(CONFIGURABLE)
    known = type(model).model_fields
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"cannot make {unknown} configurable: not fields of {type(model).__name__}.")
    specs = {
        name: ConfigurableField(id=prefix + name, name=name, description=known[name].description) for name in names
    }
    return ConfigurableGGRO(default=model, fields=specs)  # what model.configurable_fields(**specs) builds
