"""The policy side: prompt formatting and counted forward passes over a KV cache."""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch

from ..conversation import Conversation, plain_text
from ..errors import PromptError
from ..kv_cache import cache_kwargs, new_cache


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
) -> list[int]:
    """Prompt token ids: the chat template with the generation prompt, or the plain text."""
    if chat:
        kwargs: dict[str, Any] = {"add_generation_prompt": True, "tokenize": False}
        if tools:
            kwargs["tools"] = list(tools)
        text = tokenizer.apply_chat_template(conversation, **kwargs)
        return tokenizer.encode(text, add_special_tokens=False)
    if tools:
        raise PromptError("tools need a chat template; the policy's tokenizer has none.")
    return tokenizer.encode(plain_text(conversation), add_special_tokens=True)


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


class PolicyRunner:
    """Runs the policy one chunk at a time over a cache, counting the work done."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.forward_passes = 0
        self.tokens_processed = 0
        params = inspect.signature(type(model).forward).parameters
        self._keep_last = "logits_to_keep" in params

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def new_cache(self) -> Any:
        return new_cache(self.model.config)

    @torch.no_grad()
    def forward(self, ids: torch.Tensor | Sequence[Sequence[int]], cache: Any) -> torch.Tensor:
        """Feed ``ids`` (``[batch, length]``) after ``cache``; returns last-position logits ``[batch, vocab]``."""
        ids = torch.as_tensor(ids, device=self.device)
        extra = {"logits_to_keep": 1} if self._keep_last else {}
        out = self.model(input_ids=ids, **cache_kwargs(self.model, cache), **extra)
        self.forward_passes += 1
        self.tokens_processed += ids.numel()
        return out.logits[:, -1, :].float()
