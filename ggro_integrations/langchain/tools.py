"""The framework-free tool helpers (``ggro_integrations.tools``), where the LangChain adapter used to keep them."""

from ..tools import (
    CHATML_TOOLS_TEMPLATE,
    ParsedToolCalls,
    ensure_tool_template,
    parse_tool_calls,
    supports_tools,
    template_source,
    with_tool_template,
)

__all__ = [
    "CHATML_TOOLS_TEMPLATE",
    "ParsedToolCalls",
    "ensure_tool_template",
    "parse_tool_calls",
    "supports_tools",
    "template_source",
    "with_tool_template",
]
