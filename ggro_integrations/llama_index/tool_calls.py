"""Tool calls between LlamaIndex messages and chat templates: ``ToolCallBlock`` s, tool results, streaming."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.llms.llm import ToolSelection

from ..errors import PromptError
from ..tools import CALL_OPENING, ToolCallHoldback

__all__ = ["CALL_OPENING", "ToolCallHoldback", "to_conversation", "tool_selections"]

# LlamaIndex roles the chat templates of HF models do not know.
_ROLE_ALIASES = {MessageRole.CHATBOT.value: "assistant", MessageRole.MODEL.value: "assistant"}



def to_conversation(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """LlamaIndex chat messages as chat-template dicts: text, assistant tool calls and tool results."""
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message.role.value if isinstance(message.role, MessageRole) else str(message.role)
        role = _ROLE_ALIASES.get(role, role)
        text, calls = _text_and_calls(message, i)
        item: dict[str, Any] = {"role": role, "content": text}
        if calls:
            item["tool_calls"] = calls
        if role == "tool":
            kwargs = message.additional_kwargs or {}
            item["tool_call_id"] = kwargs.get("tool_call_id")
            if kwargs.get("name"):
                item["name"] = kwargs["name"]
        out.append(item)
    return out


def _text_and_calls(message: ChatMessage, index: int) -> tuple[str, list[dict[str, Any]]]:
    parts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            parts.append(block.text)
        elif isinstance(block, ToolCallBlock):
            # Hugging Face chat templates expect OpenAI-shaped calls with arguments as a mapping.
            args = block.tool_kwargs if isinstance(block.tool_kwargs, dict) else _loads(block.tool_kwargs)
            calls.append({"type": "function", "id": block.tool_call_id, "function": {"name": block.tool_name, "arguments": args}})
        else:
            raise PromptError(
                f"messages[{index}] has a {type(block).__name__}; GGRO policies read text (and tool calls) only. "
                "Send text content, or describe the attachment in text."
            )
    return "".join(parts), calls


def _loads(text: str) -> Any:
    import json

    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {"arguments": text}


def tool_selections(message: ChatMessage) -> list[ToolSelection]:
    """The ``ToolCallBlock`` s of a message as ``ToolSelection`` s (what agents execute)."""
    return [
        ToolSelection(tool_id=b.tool_call_id or "", tool_name=b.tool_name, tool_kwargs=b.tool_kwargs if isinstance(b.tool_kwargs, dict) else _loads(b.tool_kwargs))
        for b in message.blocks
        if isinstance(b, ToolCallBlock)
    ]
