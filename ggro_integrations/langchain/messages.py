"""LangChain messages -> the ``[{"role", "content"}]`` conversations a chat template reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from ..errors import PromptError


def text_content(message: BaseMessage) -> str:
    """The message's text; raises ``PromptError`` for images, audio or other non-text blocks."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") in ("text", "text-plain"):
            parts.append(str(block.get("text", "")))
        elif isinstance(block, dict) and block.get("type") in ("tool_use", "tool_call"):
            continue  # also present in message.tool_calls, which the template renders
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise PromptError(
                f"{type(message).__name__} has a {kind!r} content block; GGRO policies read text only. "
                "Send text content (or describe the attachment in text)."
            )
    return "".join(parts)


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    # Hugging Face chat templates expect OpenAI-shaped calls with arguments as a mapping.
    return {"type": "function", "id": call.get("id"), "function": {"name": call["name"], "arguments": call["args"]}}


def to_chat_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """Convert LangChain messages to chat-template dicts (tool calls and tool results included)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        content = text_content(message)
        if isinstance(message, SystemMessage):
            out.append({"role": "system", "content": content})
        elif isinstance(message, HumanMessage):
            out.append({"role": "user", "content": content})
        elif isinstance(message, AIMessage):
            item: dict[str, Any] = {"role": "assistant", "content": content}
            if message.tool_calls:
                item["tool_calls"] = [_tool_call(c) for c in message.tool_calls]
            out.append(item)
        elif isinstance(message, ToolMessage):
            out.append({"role": "tool", "content": content, "tool_call_id": message.tool_call_id, "name": message.name})
        elif isinstance(message, FunctionMessage):
            out.append({"role": "tool", "content": content, "name": message.name})
        elif isinstance(message, ChatMessage):
            out.append({"role": message.role, "content": content})
        else:
            raise PromptError(f"ChatGGRO cannot send a {type(message).__name__} to the policy.")
    return out


def tool_schema_names(tools: Sequence[dict[str, Any]]) -> list[str]:
    """Function names of OpenAI-format tool schemas."""
    return [t["function"]["name"] for t in tools if isinstance(t.get("function"), dict)]


def dumps(value: Any) -> str:
    """Compact JSON for logs and metadata (non-JSON values as strings)."""
    return json.dumps(value, default=str)
