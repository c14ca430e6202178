"""Entropy and the base decoding rule (greedy or temperature/top-p sampling)."""

from __future__ import annotations

import torch


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of ``softmax(logits)`` over the last dimension (raw logits, no temperature)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


class BaseRule:
    """Picks the next token the way the policy decodes without GGRO.

    ``temperature == 0`` is greedy (argmax, as ``generate(do_sample=False)``);
    otherwise tokens are sampled from the temperature-scaled, top-p-truncated
    distribution with a dedicated generator, so a seed reproduces the output.
    """

    def __init__(self, temperature: float = 0.0, top_p: float = 1.0, generator: torch.Generator | None = None):
        self.temperature = temperature
        self.top_p = top_p
        self.generator = generator

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """Next token for each row of ``logits`` (shape ``[batch, vocab]``)."""
        if self.greedy:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            # Keep the smallest set whose mass reaches top_p (the first token always stays).
            outside = sorted_probs.cumsum(-1) - sorted_probs >= self.top_p
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        gen = self.generator
        if gen is not None and gen.device != probs.device:
            probs = probs.cpu()
        return torch.multinomial(probs, 1, generator=gen).reshape(-1).to(logits.device)
