"""How a reward model reads (prompt, response): its own chat template around the response.

The template is rendered once per prompt with a placeholder response and split
there, giving token ids *before* and *after* the response. The response itself
is inserted as token ids, so the reward model's prefix (template + prompt +
response so far) can be cached and extended, and gradients can be taken at the
exact position of a response token. Training and scoring the default reward
head use this same function, so they read conversations identically.
"""

from __future__ import annotations

from typing import Any

from ..conversation import Conversation, plain_text
from ..errors import RewardModelError

RESPONSE_PLACEHOLDER = "GGRORESPONSEPLACEHOLDER"


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def template_parts(tokenizer: Any, conversation: Conversation) -> tuple[list[int], list[int]]:
    """Token ids that go before and after the response for ``conversation``."""
    if has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(
            list(conversation) + [{"role": "assistant", "content": RESPONSE_PLACEHOLDER}],
            tokenize=False,
        )
        before, found, after = text.partition(RESPONSE_PLACEHOLDER)
        if not found:
            raise RewardModelError(
                "the reward model's chat template dropped the assistant response; "
                "it cannot score responses. Pass a tokenizer whose template renders assistant turns."
            )
        before_ids = tokenizer.encode(before, add_special_tokens=False)
    else:
        before_ids = tokenizer.encode(plain_text(conversation) + "\n", add_special_tokens=False)
        after = ""
        if tokenizer.bos_token_id is not None:
            before_ids = [tokenizer.bos_token_id] + before_ids
    after_ids = tokenizer.encode(after, add_special_tokens=False) if after else []
    return before_ids, after_ids
