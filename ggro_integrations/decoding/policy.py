"""The policy side of a call: prompt formatting, end-of-sequence ids, the context window."""

from __future__ import annotations

from typing import Any, Sequence

from ..chat_encoding import encode_chat, encode_text
from ..conversation import Conversation, plain_text
from ..errors import PromptError


def uses_chat_template(tokenizer: Any, prompt: Any, use_chat_template: bool | None) -> bool:
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if use_chat_template and not has_template:
        raise PromptError(
            "use_chat_template=True but the policy's tokenizer has no chat template; "
            "set use_chat_template=False or give the tokenizer a chat_template."
        )
    return has_template if use_chat_template is None else use_chat_template


def encode_prompt(
    tokenizer: Any,
    conversation: Conversation,
    *,
    chat: bool,
    tools: Sequence[dict[str, Any]] | None = None,
    allow_special_tokens_in_content: bool = False,
) -> list[int]:
    """Prompt token ids: the chat template with the generation prompt, or the plain text.

    Message text is encoded as text: a control string inside it (``<|im_start|>`` ...) is
    characters, not the special token, unless ``allow_special_tokens_in_content`` (pre-templated
    prompts). Prompts without such strings give exactly ``apply_chat_template(..., tokenize=True)``.
    """
    if chat:
        kwargs: dict[str, Any] = {"add_generation_prompt": True}
        if tools:
            kwargs["tools"] = list(tools)
        return encode_chat(
            tokenizer, conversation, allow_special_tokens_in_content=allow_special_tokens_in_content, **kwargs
        )
    if tools:
        raise PromptError("tools need a chat template; the policy's tokenizer has none.")
    return encode_text(
        tokenizer,
        plain_text(conversation),
        add_special_tokens=True,
        allow_special_tokens_in_content=allow_special_tokens_in_content,
    )


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-sequence ids, as ``generate`` uses them (generation config first, then tokenizer)."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if ids is None:
        ids = tokenizer.eos_token_id
    if ids is None:
        return set()
    return {int(i) for i in ([ids] if isinstance(ids, int) else ids)}


def context_window(model: Any) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
