"""The reward model's KV cache of ``template-before ⊕ prefix``, shared by both Hugging Face sessions.

Both the shared-vocabulary and the cross-tokenizer session score rows of reward-model ids
that continue one common prefix. This object keeps the reward model's cache of that prefix,
extends or crops it as the prefix changes, scores batches of continuations after it, and
takes the gradient of one continuation's reward with respect to its input embeddings. The
sessions differ only in how they turn policy ids into reward ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..errors import RewardModelError
from ..kv_cache import cache_kwargs, crop_cache, fork_cache, new_cache
from .base import RewardUsage

if TYPE_CHECKING:
    from .hf import HFRewardModel


def pool_index(ids: Sequence[int], pad_token_id: int | None) -> int:
    """Position whose hidden state the classifier reads: transformers' rule for decoder
    classifiers (the last token that is not the pad token)."""
    if pad_token_id is None:
        return len(ids) - 1
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] != pad_token_id:
            return i
    return 0


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PrefixCache:
    """``before ⊕ prefix`` in the reward model's KV cache; rows are scored as ``row ⊕ after``."""

    def __init__(self, reward: HFRewardModel, before_ids: list[int], after_ids: list[int], usage: RewardUsage) -> None:
        self.reward = reward
        self.before_ids = before_ids
        self.after_ids = after_ids
        self.usage = usage
        self.pad: int | None = reward.model.config.pad_token_id
        self._cache: Any = None
        self.ids: list[int] = []
        """The ids the cache holds."""

    def _check_length(self, length: int) -> None:
        limit = self.reward.max_positions
        if limit is not None and length > limit:
            raise RewardModelError(
                f"the conversation is {length} reward-model tokens, over reward model {self.reward.name!r}'s "
                f"context window of {limit}; shorten the prompt or lower max_new_tokens."
            )

    @torch.no_grad()
    def extend(self, prefix: Sequence[int], longest_row: int) -> int:
        """Make the cache cover ``before ⊕ prefix``; returns its length.

        ``longest_row`` is the longest continuation about to be read after it: the whole
        sequence must fit the reward model's context, checked before any computation (a
        position past the window is an error, not an index fault or a silent extrapolation).
        """
        ids = self.before_ids + [int(t) for t in prefix]
        self._check_length(len(ids) + longest_row + len(self.after_ids))
        if self._cache is None:
            self._cache = new_cache(self.reward.model.config)
            self.ids = []
        keep = common_prefix_length(self.ids, ids)
        crop_cache(self._cache, keep)
        if len(ids) > keep:
            new = torch.tensor([ids[keep:]], device=self.reward.device)
            self.reward.backbone(input_ids=new, **cache_kwargs(self.reward.backbone, self._cache))
            self.usage.tokens_processed += len(ids) - keep
            self.usage.prompt_tokens_processed += max(0, len(self.before_ids) - keep)
        self.ids = ids
        return len(ids)

    @torch.no_grad()
    def score(self, prefix: Sequence[int], continuations: Sequence[Sequence[int]]) -> torch.Tensor:
        """Rewards of ``before ⊕ prefix ⊕ c ⊕ after`` for each continuation (reward ids), ``[n]`` float32 on CPU."""
        n = self.extend(prefix, max((len(c) for c in continuations), default=0))
        rows = [[int(t) for t in c] + self.after_ids for c in continuations]
        pools = [pool_index(self.ids + row, self.pad) - n for row in rows]
        values = torch.empty(len(rows), dtype=torch.float32)
        cached_rows = [i for i, p in enumerate(pools) if p >= 0]
        for i in set(range(len(rows))) - set(cached_rows):
            # The pooled position lies inside the prefix (an all-padding row): no cache shortcut.
            values[i] = self._score_full(self.ids + rows[i])
        if cached_rows:
            width = max(len(rows[i]) for i in cached_rows)
            filler = self.pad if self.pad is not None else 0
            batch = torch.tensor(
                [rows[i] + [filler] * (width - len(rows[i])) for i in cached_rows], device=self.reward.device
            )
            # Right padding needs no mask: causal attention never lets a real token see a later pad.
            hidden = self._run(batch)
            picked = hidden[torch.arange(len(cached_rows)), torch.tensor([pools[i] for i in cached_rows])]
            values[torch.tensor(cached_rows)] = self.reward.head(picked).float().reshape(-1).cpu()
            self.usage.tokens_processed += sum(len(rows[i]) for i in cached_rows)
        self.usage.sequences_scored += len(rows)
        return values

    def gradient(
        self, prefix: Sequence[int], continuation: Sequence[int], leaves: int
    ) -> tuple[float, torch.Tensor] | None:
        """Reward of ``before ⊕ prefix ⊕ continuation ⊕ after`` and its gradient with respect to the
        input embeddings of the first ``leaves`` continuation tokens (``[leaves, dim]``, float32).

        One forward and one backward over the continuation only. None when the classifier never
        reads the continuation (its pooled position lies in the prefix).
        """
        n = self.extend(prefix, len(continuation))
        row = [int(t) for t in continuation] + self.after_ids
        pool = pool_index(self.ids + row, self.pad) - n
        if pool < 0:
            return None
        weight = self.reward.embeddings.weight
        with torch.enable_grad():
            embedded = weight[torch.tensor(row, device=weight.device)].detach()
            leaf = embedded[:leaves].clone().requires_grad_(True)
            hidden = self._run(torch.cat([leaf, embedded[leaves:]])[None], embeds=True)
            reward = self.reward.head(hidden[0, pool]).float().sum()
            (grad,) = torch.autograd.grad(reward, leaf)
        self.usage.backward_passes += 1
        self.usage.tokens_processed += len(row)
        return float(reward.detach()), grad.float()

    def _run(self, inputs: torch.Tensor, *, embeds: bool = False) -> torch.Tensor:
        """Forward ``inputs`` (ids or embeddings) after the cached prefix, leaving the cache as it was."""
        batch = inputs.shape[0]
        n = len(self.ids)
        # One row without autograd can extend the shared cache and crop it back; a batch, or
        # a pass whose keys/values carry a gradient graph, must not touch the shared cache.
        in_place = batch == 1 and not inputs.requires_grad
        cache = self._cache if in_place else fork_cache(self._cache, batch)
        key = "inputs_embeds" if embeds else "input_ids"
        try:
            out = self.reward.backbone(**{key: inputs}, **cache_kwargs(self.reward.backbone, cache))
        finally:
            if in_place:
                crop_cache(self._cache, n)
        self.usage.forward_calls += 1
        return out.last_hidden_state

    def _score_full(self, ids: list[int]) -> float:
        out = self.reward.backbone(input_ids=torch.tensor([ids], device=self.reward.device))
        self.usage.forward_calls += 1
        self.usage.tokens_processed += len(ids)
        return float(self.reward.head(out.last_hidden_state[0, pool_index(ids, self.pad)]).float())
