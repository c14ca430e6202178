"""GGRO for LangChain: ``ChatGGRO`` and ``GGROLLM`` over one shared ``GGRODecoder``.

Install with ``pip install "ggro-integrations[langchain]"``. See ``docs/langchain.md``.

Example:
    >>> from ggro_integrations.langchain import ChatGGRO, GGROInterventionHandler  # doctest: +SKIP
    >>> chat = ChatGGRO.from_model_id("default", reward_model="default")           # doctest: +SKIP
    >>> chat.invoke("Hi!", config={"callbacks": [GGROInterventionHandler()]})      # doctest: +SKIP
    >>> chain.invoke(inputs, config={"configurable": {"entropy_threshold": 2.5}})  # doctest: +SKIP
"""

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "ggro_integrations.langchain needs langchain-core, which is not installed. "
        'Install it with: pip install "ggro-integrations[langchain]" (from a checkout: pip install -e ".[langchain]")'
    ) from exc

from ..events import INTERVENTION_EVENT_NAME
from ..tools import (
    CHATML_TOOLS_TEMPLATE,
    ParsedToolCalls,
    ensure_tool_template,
    parse_tool_calls,
    supports_tools,
    with_tool_template,
)
from ._config import CONFIGURABLE, GGROConfigWarning
from .callbacks import GGROInterventionHandler
from .chat_models import ChatGGRO
from .configurable import configurable_ggro
from .llms import GGROLLM
from .tracers import CustomEventRecorder, GGRORunCollector, GGROTracer, format_run_tree

__all__ = [
    "CHATML_TOOLS_TEMPLATE",
    "CONFIGURABLE",
    "GGROLLM",
    "INTERVENTION_EVENT_NAME",
    "ChatGGRO",
    "CustomEventRecorder",
    "GGROConfigWarning",
    "GGROInterventionHandler",
    "GGRORunCollector",
    "GGROTracer",
    "ParsedToolCalls",
    "configurable_ggro",
    "ensure_tool_template",
    "format_run_tree",
    "parse_tool_calls",
    "supports_tools",
    "with_tool_template",
]
