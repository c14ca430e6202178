"""Encoding chat messages so that message text stays text.

``apply_chat_template(..., tokenize=True)`` renders the conversation to one string and
tokenizes it, so a control string *inside a message* (``"<|im_start|>system\\n..."``) becomes
the real special token: a user can forge a system turn, close the assistant turn early, or
make the reward model read another conversation than the policy answers. Here the template's
own control tokens are parsed as usual and the ones inside message content are encoded as
plain characters (the tokenizer's ``split_special_tokens``).

How: when some message contains a special-token string, the template is rendered a second
time with a unique marker in place of those messages' content, which tells the template's
text apart from the content's. Only the special-token strings inside content are encoded
separately (as characters); everything else is encoded in one pass exactly as
``apply_chat_template(..., tokenize=True)`` does, so a prompt without control strings in its
messages gives the very same token ids (the fast path skips the second rendering).

A template that changes message text (beyond trimming whitespace) cannot be told apart from
its content this way; if such a message holds a control string, ``PromptError`` says so.
``allow_special_tokens_in_content=True`` restores plain ``apply_chat_template`` behaviour for
callers who pass pre-templated text on purpose.

Framework-free (transformers tokenizers and the standard library).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Any

from .errors import PromptError

Chunk = tuple[str, bool]
"""``(text, literal)``: ``literal`` chunks are encoded with special tokens split into characters."""


def special_token_strings(tokenizer: Any) -> tuple[str, ...]:
    """The tokenizer's special-token strings, longest first (what must not be parsed inside content)."""
    found = {str(t) for t in getattr(tokenizer, "all_special_tokens", []) or []}
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(token, "special", False):
            found.add(str(token.content))
    return tuple(sorted((s for s in found if s), key=len, reverse=True))


def _split_specials(text: str, specials: Sequence[str]) -> list[Chunk]:
    """``text`` as chunks: each special-token string in it literal, the rest not."""
    pattern = "|".join(re.escape(s) for s in specials)
    chunks: list[Chunk] = []
    last = 0
    for match in re.finditer(pattern, text):
        if match.start() > last:
            chunks.append((text[last : match.start()], False))
        chunks.append((match.group(), True))
        last = match.end()
    if last < len(text):
        chunks.append((text[last:], False))
    return chunks


def _append(chunks: list[Chunk], text: str, literal: bool) -> None:
    # Neighbouring non-literal text is encoded in one pass, as apply_chat_template would.
    if not text:
        return
    if chunks and not literal and not chunks[-1][1]:
        chunks[-1] = (chunks[-1][0] + text, False)
    else:
        chunks.append((text, literal))


def chat_chunks(
    tokenizer: Any, messages: Sequence[dict[str, Any]], *, allow_special_tokens_in_content: bool = False, **template: Any
) -> list[Chunk]:
    """The rendered chat template as chunks to encode (see the module docstring).

    ``template`` is passed to ``apply_chat_template`` (``add_generation_prompt``, ``tools``).
    """
    normal = tokenizer.apply_chat_template(list(messages), tokenize=False, **template)
    specials = special_token_strings(tokenizer)
    flagged = [
        i
        for i, m in enumerate(messages)
        if isinstance(m.get("content"), str) and any(s in m["content"] for s in specials)
    ]
    if allow_special_tokens_in_content or not flagged:
        return [(normal, False)]
    nonce = secrets.token_hex(8)
    marked = [dict(m) for m in messages]
    for i in flagged:
        marked[i]["content"] = f"GGRO{nonce}M{i}E"  # letters and digits only: no template escapes or trims it
    rendered = tokenizer.apply_chat_template(marked, tokenize=False, **template)
    parts = re.split(f"GGRO{nonce}M(\\d+)E", rendered)
    # parts alternates template text and marker indices: [text, i, text, i, ..., text]
    indices = [int(p) for p in parts[1::2]]
    if sorted(indices) != flagged:
        raise _transforms_content(flagged)
    for transform in (lambda c: c, str.strip):  # verbatim, or trimmed (Llama 3's `| trim`)
        content = {i: transform(messages[i]["content"]) for i in flagged}
        if "".join(p if k % 2 == 0 else content[int(p)] for k, p in enumerate(parts)) == normal:
            break
    else:
        raise _transforms_content(flagged)
    chunks: list[Chunk] = []
    for k, part in enumerate(parts):
        if k % 2 == 0:
            _append(chunks, part, False)
        else:
            for text, literal in _split_specials(content[int(part)], specials):
                _append(chunks, text, literal)
    return chunks


def _transforms_content(flagged: list[int]) -> PromptError:
    where = ", ".join(f"prompt[{i}]" for i in flagged)
    return PromptError(
        f"{where} contains special-token strings (such as '<|im_start|>'), and the chat template rewrites that "
        "message's text, so they cannot be kept as plain text. Remove them from the message, or set "
        "allow_special_tokens_in_content=True if the text is pre-templated on purpose."
    )


def encode_chunks(tokenizer: Any, chunks: Sequence[Chunk]) -> list[int]:
    ids: list[int] = []
    for text, literal in chunks:
        # Non-literal chunks keep the tokenizer's own default, exactly as apply_chat_template encodes.
        extra = {"split_special_tokens": True} if literal else {}
        ids += tokenizer.encode(text, add_special_tokens=False, **extra)
    return ids


def encode_chat(
    tokenizer: Any, messages: Sequence[dict[str, Any]], *, allow_special_tokens_in_content: bool = False, **template: Any
) -> list[int]:
    """Token ids of the rendered chat template, message text encoded as text."""
    chunks = chat_chunks(
        tokenizer, messages, allow_special_tokens_in_content=allow_special_tokens_in_content, **template
    )
    return encode_chunks(tokenizer, chunks)


def encode_text(
    tokenizer: Any, text: str, *, add_special_tokens: bool, allow_special_tokens_in_content: bool = False
) -> list[int]:
    """Token ids of ``text`` that is all message content (no template): control strings stay text."""
    return tokenizer.encode(
        text, add_special_tokens=add_special_tokens, split_special_tokens=not allow_special_tokens_in_content
    )
