"""``configurable_ggro``: deprecated — every GGRO model reads its options from ``config["configurable"]`` itself."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TypeVar

from ..errors import ConfigError
from ._base import GGROFields
from ._config import CONFIGURABLE, register_prefix

M = TypeVar("M", bound=GGROFields)

__all__ = ["CONFIGURABLE", "configurable_ggro"]


def configurable_ggro(model: M, fields: Iterable[str] | None = None, *, prefix: str = "") -> M:
    """Deprecated: ``model`` is configurable already. Returns a copy reading keys ``prefix + name``.

    It used to wrap the model in LangChain's ``configurable_fields``; a GGRO model now
    reads every option in ``CONFIGURABLE`` from ``config["configurable"]`` itself, so
    ``fields`` no longer narrows anything (it is still checked). Use
    ``ChatGGRO(..., configurable_prefix="chat_")`` for a prefix.
    """
    names = list(fields) if fields is not None else list(CONFIGURABLE)
    unknown = [n for n in names if n not in CONFIGURABLE]
    if unknown:
        raise ConfigError(
            f"cannot make {unknown} configurable: not fields of {type(model).__name__}; "
            f"configurable options are {', '.join(CONFIGURABLE)}."
        )
    warnings.warn(
        "configurable_ggro(model) is deprecated: GGRO models read config['configurable'] themselves. "
        "Use the model directly, with configurable_prefix=... for prefixed keys.",
        DeprecationWarning,
        stacklevel=2,
    )
    register_prefix(prefix)  # model_copy skips the validator that registers it
    return model.model_copy(update={"configurable_prefix": prefix})
