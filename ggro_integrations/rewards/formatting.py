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

from ..chat_encoding import chat_chunks, encode_chunks, encode_text
from ..conversation import Conversation, plain_text
from ..errors import RewardModelError

RESPONSE_PLACEHOLDER = "GGRORESPONSEPLACEHOLDER"


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def template_parts(
    tokenizer: Any, conversation: Conversation, *, allow_special_tokens_in_content: bool = False
) -> tuple[list[int], list[int]]:
    """Token ids that go before and after the response for ``conversation``.

    Message text is encoded as text (a control string in it is characters, not a special
    token), as in the policy's prompt, unless ``allow_special_tokens_in_content``.
    """
    if has_chat_template(tokenizer):
        chunks = chat_chunks(
            tokenizer,
            list(conversation) + [{"role": "assistant", "content": RESPONSE_PLACEHOLDER}],
            allow_special_tokens_in_content=allow_special_tokens_in_content,
        )
        for i, (text, literal) in enumerate(chunks):
            if not literal and RESPONSE_PLACEHOLDER in text:
                before, _, after = text.partition(RESPONSE_PLACEHOLDER)
                return (
                    encode_chunks(tokenizer, chunks[:i] + [(before, False)]),
                    encode_chunks(tokenizer, [(after, False)] + chunks[i + 1 :]),
                )
        raise RewardModelError(
            "the reward model's chat template dropped the assistant response; "
            "it cannot score responses. Pass a tokenizer whose template renders assistant turns."
        )
    before_ids = encode_text(
        tokenizer,
        plain_text(conversation) + "\n",
        add_special_tokens=False,
        allow_special_tokens_in_content=allow_special_tokens_in_content,
    )
    if tokenizer.bos_token_id is not None:
        before_ids = [tokenizer.bos_token_id] + before_ids
    return before_ids, []
