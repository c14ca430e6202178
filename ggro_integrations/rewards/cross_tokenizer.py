"""Reward models whose vocabulary differs from the policy's: the cross-tokenizer path.

Responses arrive as policy token ids. The session decodes them to text and
re-encodes that text with the reward tokenizer (as text: a control string the
policy spelled out stays characters), then scores in reward ids through the
same ``PrefixCache`` as the shared-vocabulary session: rows share their longest
common reward-token prefix, which is cached and extended.

Gradient gains at a trigger (policy token ``c`` at response position ``t``):

1. The response text is encoded with the reward tokenizer *with offset
   mappings*; the reward tokens whose characters overlap ``c``'s characters
   are the ones the swap touches.
2. For each candidate ``v`` the swapped response text is encoded too. Its
   reward tokens that differ from the original (common prefix and suffix
   stripped), widened to include the covering tokens, form the candidate's
   window; the original's window is the same span of the original encoding.
3. One backward pass gives ``g_k = ∂r/∂e_k`` at every window position. The
   candidate's embeddings are resampled onto the original window's length
   (each position takes the mean of the candidate tokens falling on it; the
   identity when lengths agree) and the first-order gain is
   ``Σ_k (Ê_v[k] − E[w_k]) · g_k``.

When the swap changes reward tokens one for one, step 3 is exactly the
shared-vocabulary estimate; length changes are where it is approximate.
``nudge_scoring="exact"`` measures every swap instead and is the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from .base import RewardScores, RewardSession, TokenIds
from .prefix_cache import PrefixCache, common_prefix_length

if TYPE_CHECKING:
    from .hf import HFRewardModel


def _common_suffix_length(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = 0
    while n < limit and a[len(a) - 1 - n] == b[len(b) - 1 - n]:
        n += 1
    return n


def _resample(embeds: torch.Tensor, length: int) -> torch.Tensor:
    """Map ``[m, d]`` embeddings onto ``length`` positions (mean of the tokens landing on each)."""
    m = embeds.shape[0]
    if m == length:
        return embeds
    rows = []
    for k in range(length):
        lo = (k * m) // length
        hi = max(lo + 1, -(-((k + 1) * m) // length))
        rows.append(embeds[lo:hi].mean(0))
    return torch.stack(rows)


class CrossTokenizerSession(RewardSession):
    """Scores policy-id responses with an ``HFRewardModel`` over a different vocabulary."""

    def __init__(self, reward: HFRewardModel, before_ids: list[int], after_ids: list[int], policy_tokenizer: Any) -> None:
        super().__init__()
        self.reward = reward
        self.policy_tokenizer = policy_tokenizer
        self.prefix = PrefixCache(reward, before_ids, after_ids, self.usage)

    # -- text <-> reward ids --------------------------------------------------

    def _text(self, ids: Sequence[int]) -> str:
        # The decoder's own rule for response text (special tokens such as EOS are not text).
        return self.policy_tokenizer.decode([int(t) for t in ids], skip_special_tokens=True)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        encoded = self.reward.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return [list(ids) for ids in encoded]

    def score(self, prefix: TokenIds, continuations: Sequence[TokenIds]) -> RewardScores:
        head = [int(t) for t in prefix]
        rows = self._encode([self._text(head + [int(t) for t in c]) for c in continuations])
        if not rows:
            return RewardScores(torch.empty(0))
        # Cache what every row shares, but leave each row at least one token of its own, so the
        # pooled position is computed in the batch rather than read from the cache.
        cut = min(len(r) for r in rows) - 1
        for r in rows[1:]:
            cut = min(cut, common_prefix_length(rows[0], r))
        cut = max(cut, 0)
        return RewardScores(self.prefix.score(rows[0][:cut], [r[cut:] for r in rows]))

    def gradient_gains(self, prefix: TokenIds, continuation: TokenIds, candidates: TokenIds) -> torch.Tensor:
        return self._reward_and_gains(prefix, continuation, candidates)[1]

    def score_and_gradient_gains(
        self, prefix: TokenIds, continuation: TokenIds, candidates: TokenIds
    ) -> tuple[RewardScores, torch.Tensor]:
        reward, gains = self._reward_and_gains(prefix, continuation, candidates)
        if reward is None:  # the classifier never reads the swapped tokens: score the usual way
            return self.score(prefix, [continuation]), gains
        self.usage.sequences_scored += 1
        return RewardScores(torch.tensor([reward], dtype=torch.float32)), gains

    # -- gradients ------------------------------------------------------------

    def _covering(self, text: str, start: int, end: int) -> tuple[list[int], list[int]]:
        """Reward ids of ``text`` and the indices of the tokens overlapping characters [start, end)."""
        tok = self.reward.tokenizer
        if not getattr(tok, "is_fast", False):
            return self._encode([text])[0], []  # no offsets: the id diff alone defines the windows
        enc = tok(text, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=True)
        cover = [j for j, (s, e) in enumerate(enc["offset_mapping"]) if s < end and e > start]
        return list(enc["input_ids"]), cover

    def _reward_and_gains(
        self, prefix: TokenIds, continuation: TokenIds, candidates: TokenIds
    ) -> tuple[float | None, torch.Tensor]:
        if not continuation:
            raise ValueError("continuation must hold at least the trigger token")
        head = [int(t) for t in prefix]
        cont = [int(t) for t in continuation]
        rest = cont[1:]
        text = self._text(head + cont)
        # Character span of the trigger token, robust to decodes that are not additive.
        start = common_prefix_length(self._text(head), text)
        end = max(start, common_prefix_length(self._text(head + cont[:1]), text))
        ids, cover = self._covering(text, start, end)
        swapped = self._encode([self._text(head + [int(v)] + rest) for v in candidates])

        windows = [self._window(ids, r, cover) for r in swapped]
        starts = [w[0] for w in windows if w is not None]
        if not starts:
            return None, torch.zeros(len(candidates))
        low = min(starts)
        out = self.prefix.gradient(ids[:low], ids[low:], leaves=len(ids) - low)
        if out is None:
            return None, torch.zeros(len(candidates))  # the classifier never reads the swapped tokens
        reward, grad = out
        weight = self.reward.embeddings.weight
        gains = torch.zeros(len(candidates))
        for i, (window, row) in enumerate(zip(windows, swapped)):
            if window is None:
                continue
            lo, hi_orig, hi_cand = window
            orig = weight[torch.tensor(ids[lo:hi_orig], device=weight.device)].float()
            cand = weight[torch.tensor(row[lo:hi_cand], device=weight.device)].float()
            delta = _resample(cand, orig.shape[0]) - orig
            gains[i] = float((delta * grad[lo - low : hi_orig - low]).sum())
        return reward, gains

    @staticmethod
    def _window(ids: list[int], row: list[int], cover: list[int]) -> tuple[int, int, int] | None:
        """``(lo, hi_in_ids, hi_in_row)``: the span where ``row`` differs from ``ids``, widened to ``cover``.

        None when the swap leaves the reward tokens unchanged (a zero gain).
        """
        a = common_prefix_length(ids, row)
        b = _common_suffix_length(ids, row, min(len(ids), len(row)) - a)
        if a == len(ids) and a == len(row):
            return None
        lo, hi_ids, hi_row = a, len(ids) - b, len(row) - b
        if cover:
            # Both encodings agree outside the diff, so widening by shared tokens keeps them aligned.
            lo = min(lo, cover[0])
            extra = max(0, cover[-1] + 1 - hi_ids)
            hi_ids, hi_row = hi_ids + extra, hi_row + extra
        if lo in (hi_ids, hi_row):
            # A pure insertion or deletion: lean on a neighbouring shared token's gradient.
            if lo > 0:
                lo -= 1
            else:
                hi_ids, hi_row = hi_ids + 1, hi_row + 1
        if hi_ids > len(ids) or hi_row > len(row) or lo in (hi_ids, hi_row):
            return None
        return lo, hi_ids, hi_row
