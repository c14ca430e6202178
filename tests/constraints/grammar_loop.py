"""A minimal masked decoding loop, standing in for the decoder until it calls LogitsHooks itself.

It does per step what the decoder is meant to: raw logits from a forward pass with a KV cache,
``hooks(logits)`` (mask + processors), the pick (greedy, sampled, or "the i-th best allowed",
which is how a GGRO nudge from the allowed top-K is drawn), ``hooks.advance``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ggro_integrations.constraints import LogitsHooks, allowed_top_k
from ggro_integrations.kv_cache import cache_kwargs, new_cache


def generate(
    model: Any,
    hooks: LogitsHooks,
    prompt_ids: Sequence[int],
    eos_ids: Sequence[int],
    *,
    max_new_tokens: int = 300,
    pick: Callable[[torch.Tensor, int], int] | None = None,
) -> tuple[list[int], bool]:
    """(generated ids, ended with EOS). ``pick(scores, step)`` chooses a token from the hooked scores."""
    pick = pick or (lambda scores, step: int(scores.argmax()))
    cache = new_cache(model.config)
    out: list[int] = []
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([list(prompt_ids)]), **cache_kwargs(model, cache)).logits[:, -1]
        for step in range(max_new_tokens):
            scores = hooks(logits.float().clone())
            token = pick(scores, step)
            hooks.advance(token)
            out.append(token)
            if token in eos_ids:
                return out, True
            logits = model(input_ids=torch.tensor([[token]]), **cache_kwargs(model, cache)).logits[:, -1]
    return out, False


def chat_prompt(tokenizer: Any, text: str, **template_kwargs: Any) -> list[int]:
    """The ids of a one-message chat, ready for the assistant's reply."""
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, return_dict=True, **template_kwargs
    )
    return list(encoded["input_ids"])


def sampler(seed: int, temperature: float = 1.0) -> Callable[[torch.Tensor, int], int]:
    gen = torch.Generator().manual_seed(seed)

    def pick(scores: torch.Tensor, step: int) -> int:
        probs = torch.softmax(scores.reshape(-1) / temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=gen))

    return pick


def drive(state_or_hooks: Any, choices: Sequence[int], *, seed: int, k: int = 8, max_steps: int = 400) -> tuple[list[int], bool]:
    """Walk a grammar without a model: random scores each step, take the ``choices[i] % n``-th best of
    the allowed top-``k`` (0 once ``choices`` runs out). Returns (ids, ended with EOS)."""
    hooks = state_or_hooks if isinstance(state_or_hooks, LogitsHooks) else LogitsHooks(state_or_hooks)
    eos = set(hooks.state.grammar.eos_token_ids)
    vocab = hooks.state.grammar.vocab_size
    gen = torch.Generator().manual_seed(seed)
    out: list[int] = []
    for step in range(max_steps):
        scores = hooks(torch.randn(vocab, generator=gen))
        candidates = allowed_top_k(scores, k)
        token = candidates[(choices[step] if step < len(choices) else 0) % len(candidates)]
        hooks.advance(token)
        out.append(token)
        if token in eos:
            return out, True
    return out, False


def text_of(tokenizer: Any, ids: Sequence[int]) -> str:
    """The output text without its end token."""
    return tokenizer.decode([i for i in ids if i != tokenizer.eos_token_id], skip_special_tokens=False)


_CALL = re.compile(r"<tool_call>\n(.*?)\n</tool_call>", flags=re.DOTALL)


def hermes_calls(text: str) -> tuple[str, list[dict[str, Any]]]:
    """(text before the first call, the calls) of a Hermes response; asserts nothing else is there."""
    first = text.find("<tool_call>")
    if first < 0:
        return text, []
    head, rest = text[:first], text[first:]
    calls = [json.loads(body) for body in _CALL.findall(rest)]
    leftover = _CALL.sub("", rest).replace("\n", "")
    assert leftover == "", f"text outside the tool-call blocks: {leftover!r} in {text!r}"
    return head, calls
