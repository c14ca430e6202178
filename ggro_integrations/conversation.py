"""Prompts as conversations: the one shape both the policy and reward models read."""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

from .errors import PromptError

Message = dict[str, Any]
Conversation = list[Message]
Prompt = Union[str, Sequence[Mapping[str, Any]]]
"""A plain string, or chat messages: ``[{"role": "user", "content": "..."}]``."""

_ROLES = {"system", "user", "assistant", "tool", "developer", "function"}


def as_conversation(prompt: Prompt) -> Conversation:
    """Validate ``prompt`` and return it as a list of messages.

    A string becomes one user message. Raises ``PromptError`` on an empty prompt
    or a malformed message.
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            raise PromptError("prompt is empty; pass a non-empty string or list of messages.")
        return [{"role": "user", "content": prompt}]
    if not isinstance(prompt, Sequence) or isinstance(prompt, (bytes, bytearray)):
        raise PromptError(
            f"prompt must be a string or a list of {{'role', 'content'}} messages; got {type(prompt).__name__}."
        )
    messages: Conversation = []
    for i, message in enumerate(prompt):
        if not isinstance(message, Mapping) or "role" not in message:
            raise PromptError(f"prompt[{i}] must be a mapping with 'role' and 'content'; got {message!r}.")
        if message["role"] not in _ROLES:
            raise PromptError(f"prompt[{i}] has unknown role {message['role']!r}; use one of {sorted(_ROLES)}.")
        content = message.get("content")
        if content is None and not message.get("tool_calls"):
            raise PromptError(f"prompt[{i}] has no 'content'.")
        messages.append({**message, "content": _content_text(i, content)})
    if not messages:
        raise PromptError("prompt is an empty message list; pass at least one message.")
    if not any(isinstance(m.get("content"), str) and m["content"].strip() for m in messages):
        raise PromptError("prompt messages are all empty; give at least one message some content.")
    return messages


def _content_text(index: int, content: Any) -> str | None:
    """A message's content as one string: a string, or a list of text blocks joined (as LangChain and
    OpenAI-style clients send them). Anything else cannot be shown to a text model."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        texts = []
        for j, block in enumerate(content):
            if isinstance(block, str):
                texts.append(block)
            elif isinstance(block, Mapping) and block.get("type") == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            else:
                kind = block.get("type") if isinstance(block, Mapping) else type(block).__name__
                raise PromptError(
                    f"prompt[{index}]['content'][{j}] is a {kind!r} block; only text blocks "
                    "({'type': 'text', 'text': ...}) or strings can be given to a text model."
                )
        # Concatenated as written, the way chat templates that accept block lists render them.
        return "".join(texts)
    raise PromptError(
        f"prompt[{index}]['content'] must be a string or a list of text blocks; got {type(content).__name__} "
        f"({content!r:.60})."
    )


def plain_text(conversation: Conversation) -> str:
    """The conversation as plain text, for models without a chat template.

    A single user message is returned verbatim (so completion-style prompts stay
    unchanged); longer conversations become ``Role: content`` blocks.
    """
    if len(conversation) == 1 and conversation[0]["role"] == "user":
        return str(conversation[0]["content"])
    blocks = [f"{m['role'].capitalize()}: {m.get('content') or ''}" for m in conversation]
    return "\n\n".join(blocks) + "\n\nAssistant:"
