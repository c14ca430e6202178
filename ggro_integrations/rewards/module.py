"""Custom differentiable rewards: any module over input embeddings.

``EmbeddingReward`` wraps a callable ``f(inputs_embeds, attention_mask) -> [batch]``
together with the embedding matrix and tokenizer it reads. It shares the
policy's vocabulary, so GGRO's gradient path works on it unchanged; it has no
prefix cache (each call runs the full conversation).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ..conversation import Conversation
from ..errors import RewardModelError, VocabularyMismatchError
from .base import RewardModel, RewardScores, RewardSession, TokenIds, check_scores
from .formatting import template_parts
from .vocab import shares_vocabulary

EmbeddingScorer = Callable[[torch.Tensor, torch.Tensor], Any]


class EmbeddingReward(RewardModel):
    """A user-supplied differentiable reward over token embeddings.

    Example:
        >>> weight = torch.zeros(vocab_size, dim); weight[polite_id, 0] = 1.0  # doctest: +SKIP
        >>> reward = EmbeddingReward(lambda e, m: (e[..., 0] * m).sum(-1), weight, tokenizer)  # doctest: +SKIP
    """

    def __init__(
        self,
        scorer: EmbeddingScorer,
        embeddings: torch.Tensor | torch.nn.Embedding,
        tokenizer: Any,
        *,
        name: str = "custom-embedding-reward",
    ) -> None:
        self.scorer = scorer
        weight = embeddings.weight if isinstance(embeddings, torch.nn.Embedding) else embeddings
        self.weight = weight.detach()
        self.tokenizer = tokenizer
        self.name = name

    def check_policy_tokenizer(self, policy_tokenizer: Any) -> None:
        if not shares_vocabulary(self.tokenizer, policy_tokenizer):
            raise VocabularyMismatchError(
                f"reward {self.name!r} must read the policy's own token ids; its tokenizer differs."
            )

    def session(
        self, conversation: Conversation, policy_tokenizer: Any, *, allow_special_tokens_in_content: bool = False
    ) -> RewardSession:
        self.check_policy_tokenizer(policy_tokenizer)
        before, after = template_parts(
            self.tokenizer, conversation, allow_special_tokens_in_content=allow_special_tokens_in_content
        )
        return _EmbeddingSession(self, before, after)


class _EmbeddingSession(RewardSession):
    def __init__(self, reward: EmbeddingReward, before_ids: list[int], after_ids: list[int]) -> None:
        super().__init__()
        self.reward = reward
        self.before_ids, self.after_ids = before_ids, after_ids

    def _embed_batch(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        weight = self.reward.weight
        embeds = torch.zeros(len(rows), width, weight.shape[1], dtype=weight.dtype, device=weight.device)
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=weight.device)
        for i, row in enumerate(rows):
            embeds[i, : len(row)] = weight[torch.tensor(row, device=weight.device)]
            mask[i, : len(row)] = 1
        return embeds, mask

    def _call(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.usage.forward_calls += 1
        self.usage.tokens_processed += int(mask.sum())
        return self.reward.scorer(embeds, mask)

    @torch.no_grad()
    def score(self, prefix: TokenIds, continuations: Sequence[TokenIds]) -> RewardScores:
        head = self.before_ids + [int(t) for t in prefix]
        rows = [head + [int(t) for t in c] + self.after_ids for c in continuations]
        values = check_scores(self._call(*self._embed_batch(rows)), len(rows), f"reward {self.reward.name!r}")
        self.usage.sequences_scored += len(rows)
        return RewardScores(values)

    def gradient_gains(self, prefix: TokenIds, continuation: TokenIds, candidates: TokenIds) -> torch.Tensor:
        position = len(self.before_ids) + len(prefix)
        row = self.before_ids + [int(t) for t in prefix] + [int(t) for t in continuation] + self.after_ids
        embeds, mask = self._embed_batch([row])
        with torch.enable_grad():
            embeds = embeds.requires_grad_(True)
            value = torch.as_tensor(self._call(embeds, mask)).float().sum()
            grad = None
            if value.requires_grad:
                (grad,) = torch.autograd.grad(value, embeds, allow_unused=True)
            if grad is None:
                raise RewardModelError(
                    f"reward {self.reward.name!r}: its scorer's output does not depend on inputs_embeds through "
                    "autograd, so it has no gradient. The scorer must compute its [batch] tensor from the "
                    "inputs_embeds it is given with differentiable torch operations (no .detach(), .item(), "
                    "numpy or torch.no_grad()); for a scorer without a gradient use nudge_scoring='exact'."
                )
        self.usage.backward_passes += 1
        g = grad[0, position].float()
        weight = self.reward.weight.float()
        cand = weight[torch.tensor([int(v) for v in candidates], device=weight.device)]
        return ((cand - weight[int(continuation[0])]) @ g).cpu()
