"""Hugging Face sequence-classification reward models (one label).

The shared-vocabulary path: responses arrive as policy token ids, which are also
the reward model's ids. The reward model's KV cache of
``template-before ⊕ prompt ⊕ response-so-far`` is kept and extended, so each
candidate costs only its own segment plus the template's closing tokens, and
the gradient at a trigger token is one backward pass over that segment.

When the vocabularies differ (``shares_vocabulary`` compares them in full),
``HFRewardModel.session`` returns a ``CrossTokenizerSession`` instead
(rewards/cross_tokenizer.py), which re-encodes response text in reward ids.
"""

from __future__ import annotations

import os
import weakref
from typing import Any, Sequence

import torch

from ..conversation import Conversation
from ..errors import RewardModelError
from ..kv_cache import cache_kwargs, crop_cache, fork_cache, new_cache
from .base import RewardModel, RewardScores, RewardSession, TokenIds
from .formatting import template_parts
from .vocab import shares_vocabulary


def _pool_index(ids: Sequence[int], pad_token_id: int | None) -> int:
    """Position whose hidden state the classifier reads: transformers' rule for
    decoder classifiers (the last token that is not the pad token)."""
    if pad_token_id is None:
        return len(ids) - 1
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] != pad_token_id:
            return i
    return 0


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class HFRewardModel(RewardModel):
    """A one-label ``AutoModelForSequenceClassification`` as a GGRO reward.

    Works with decoder-style classifiers that have a ``score`` head over their
    base model (Llama, Qwen2, Mistral, Gemma, GPT-2, ... — the architecture of
    Skywork-Reward, GRM and most open reward models). Conversations are
    formatted with the reward tokenizer's chat template when it has one.

    Example:
        >>> reward = HFRewardModel(rm_model, rm_tokenizer)            # doctest: +SKIP
        >>> reward = HFRewardModel.from_pretrained("path/or/hub-id")  # doctest: +SKIP
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str | None = None) -> None:
        num_labels = getattr(model.config, "num_labels", None)
        if num_labels != 1:
            raise RewardModelError(
                f"reward model {name or type(model).__name__} has {num_labels} output labels; GGRO needs a "
                "single scalar score. Use a one-label reward model (num_labels=1) or wrap yours in a custom RewardModel."
            )
        backbone = getattr(model, getattr(model, "base_model_prefix", ""), None)
        head = getattr(model, "score", None)
        if backbone is None or not isinstance(head, torch.nn.Module):
            raise RewardModelError(
                f"{type(model).__name__} is not a decoder-style classifier with a `score` head over its base "
                "model; HFRewardModel supports Llama/Qwen2/Mistral/Gemma/GPT-2-style reward models. "
                "Wrap other models in a custom RewardModel (see docs/reward-models.md)."
            )
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        self.tokenizer = tokenizer
        self.backbone = backbone
        self.head = head
        self.embeddings: torch.nn.Embedding = model.get_input_embeddings()
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.max_positions: int | None = getattr(model.config, "max_position_embeddings", None)
        self._shared: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()

    @classmethod
    def from_pretrained(
        cls,
        model_id: str,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        trust_remote_code: bool = False,
        name: str | None = None,
    ) -> HFRewardModel:
        """Load a reward model from a hub id or local path (safetensors preferred, no remote code by default)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if model_id.startswith((".", "/", "~")) and not os.path.exists(os.path.expanduser(model_id)):
            raise RewardModelError(f"reward model path {model_id!r} does not exist.")
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if dtype is not None:
            kwargs["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
        local = os.path.expanduser(model_id)
        if os.path.isdir(local) and any(f.endswith(".safetensors") for f in os.listdir(local)):
            kwargs["use_safetensors"] = True
        try:
            model = AutoModelForSequenceClassification.from_pretrained(model_id, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=trust_remote_code)
        except OSError as exc:
            raise RewardModelError(f"could not load reward model {model_id!r}: {exc}") from exc
        if device is not None:
            model.to(device)
        return cls(model, tokenizer, name=name or model_id)

    @property
    def device(self) -> torch.device:
        return self.embeddings.weight.device

    def shares_vocabulary_with(self, policy_tokenizer: Any) -> bool:
        """Whether ``policy_tokenizer`` maps every token to the same id as this reward's (memoised)."""
        try:
            return self._shared[policy_tokenizer]
        except (KeyError, TypeError):
            pass
        shared = shares_vocabulary(self.tokenizer, policy_tokenizer)
        try:
            # Comparing two 128k-token vocabularies costs tens of ms: once per tokenizer, not per call.
            self._shared[policy_tokenizer] = shared
        except TypeError:
            pass  # not weak-referenceable: compare again next time
        return shared

    def check_policy_tokenizer(self, policy_tokenizer: Any) -> None:
        # Any policy tokenizer works: a different vocabulary takes the cross-tokenizer path.
        if not callable(getattr(policy_tokenizer, "decode", None)):
            raise RewardModelError(
                f"the policy tokenizer ({type(policy_tokenizer).__name__}) has no decode(); reward model "
                f"{self.name!r} needs it to read responses written in another vocabulary."
            )

    def session(self, conversation: Conversation, policy_tokenizer: Any) -> RewardSession:
        if self.shares_vocabulary_with(policy_tokenizer):
            return SharedVocabSession(self, conversation)
        from .cross_tokenizer import CrossTokenizerSession

        self.check_policy_tokenizer(policy_tokenizer)
        return CrossTokenizerSession(self, conversation, policy_tokenizer)


class SharedVocabSession(RewardSession):
    """Scores policy-id responses with an ``HFRewardModel`` over the same vocabulary."""

    def __init__(self, reward: HFRewardModel, conversation: Conversation) -> None:
        super().__init__()
        self.reward = reward
        self.before_ids, self.after_ids = template_parts(reward.tokenizer, conversation)
        self._pad = reward.model.config.pad_token_id
        self._cache: Any = None
        self._cached_ids: list[int] = []

    # -- prefix cache -------------------------------------------------------

    def _check_length(self, length: int) -> None:
        limit = self.reward.max_positions
        if limit is not None and length > limit:
            raise RewardModelError(
                f"the conversation is {length} reward-model tokens, over reward model {self.reward.name!r}'s "
                f"context window of {limit}; shorten the prompt or lower max_new_tokens."
            )

    @torch.no_grad()
    def _extend_prefix(self, prefix: TokenIds) -> int:
        """Make the cache cover ``before ⊕ prefix``; returns its length."""
        ids = self.before_ids + [int(t) for t in prefix]
        self._check_length(len(ids) + len(self.after_ids))
        if self._cache is None:
            self._cache = new_cache(self.reward.model.config)
            self._cached_ids = []
        keep = _common_prefix_length(self._cached_ids, ids)
        crop_cache(self._cache, keep)
        if len(ids) > keep:
            new = torch.tensor([ids[keep:]], device=self.reward.device)
            self.reward.backbone(input_ids=new, **cache_kwargs(self.reward.backbone, self._cache))
            self.usage.tokens_processed += len(ids) - keep
            self.usage.prompt_tokens_processed += max(0, len(self.before_ids) - keep)
        self._cached_ids = ids
        return len(ids)

    # -- scoring ------------------------------------------------------------

    @torch.no_grad()
    def score(self, prefix: TokenIds, continuations: Sequence[TokenIds]) -> RewardScores:
        n = self._extend_prefix(prefix)
        rows = [[int(t) for t in c] + self.after_ids for c in continuations]
        pools = [_pool_index(self._cached_ids + row, self._pad) - n for row in rows]
        values = torch.empty(len(rows), dtype=torch.float32)
        cached_rows = [i for i, p in enumerate(pools) if p >= 0]
        for i in set(range(len(rows))) - set(cached_rows):
            # The pooled position lies inside the prefix (an all-padding row): no cache shortcut.
            values[i] = self._score_full(self._cached_ids + rows[i])
        if cached_rows:
            width = max(len(rows[i]) for i in cached_rows)
            filler = self._pad if self._pad is not None else 0
            batch = torch.tensor(
                [rows[i] + [filler] * (width - len(rows[i])) for i in cached_rows], device=self.reward.device
            )
            # Right padding needs no mask: causal attention never lets a real token see a later pad.
            hidden = self._run(batch)
            picked = hidden[torch.arange(len(cached_rows)), torch.tensor([pools[i] for i in cached_rows])]
            scores = self.reward.head(picked).float().reshape(-1).cpu()
            values[torch.tensor(cached_rows)] = scores
            self.usage.tokens_processed += sum(len(rows[i]) for i in cached_rows)
        self.usage.sequences_scored += len(rows)
        return RewardScores(values)

    def _run(self, inputs: torch.Tensor, *, embeds: bool = False) -> torch.Tensor:
        """Forward ``inputs`` (ids or embeddings) after the cached prefix, leaving the cache as it was."""
        batch = inputs.shape[0]
        n = len(self._cached_ids)
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
        return float(self.reward.head(out.last_hidden_state[0, _pool_index(ids, self._pad)]).float())

    # -- gradients ----------------------------------------------------------

    def gradient_gains(self, prefix: TokenIds, continuation: TokenIds, candidates: TokenIds) -> torch.Tensor:
        return self._reward_and_gains(prefix, continuation, candidates)[1]

    def score_and_gradient_gains(
        self, prefix: TokenIds, continuation: TokenIds, candidates: TokenIds
    ) -> tuple[RewardScores, torch.Tensor]:
        reward, gains = self._reward_and_gains(prefix, continuation, candidates)
        if reward is None:  # the classifier never reads the trigger token: score the usual way
            return self.score(prefix, [continuation]), gains
        self.usage.sequences_scored += 1
        return RewardScores(torch.tensor([reward], dtype=torch.float32)), gains

    def _reward_and_gains(
        self, prefix: TokenIds, continuation: TokenIds, candidates: TokenIds
    ) -> tuple[float | None, torch.Tensor]:
        """One forward + backward over the continuation: its reward and every candidate's predicted gain.

        ``gradient_gains`` and ``score_and_gradient_gains`` both go through here, so a
        session that reads the response differently (cross-tokenizer) overrides only this.
        """
        if not continuation:
            raise ValueError("continuation must hold at least the trigger token")
        n = self._extend_prefix(prefix)
        row = [int(t) for t in continuation] + self.after_ids
        pool = _pool_index(self._cached_ids + row, self._pad) - n
        if pool < 0:
            return None, torch.zeros(len(candidates))
        weight = self.reward.embeddings.weight
        ids = torch.tensor(row, device=weight.device)
        with torch.enable_grad():
            embedded = weight[ids].detach()
            trigger = embedded[:1].clone().requires_grad_(True)
            hidden = self._run(torch.cat([trigger, embedded[1:]])[None], embeds=True)
            reward = self.reward.head(hidden[0, pool]).float().sum()
            (grad,) = torch.autograd.grad(reward, trigger)
        self.usage.backward_passes += 1
        self.usage.tokens_processed += len(row)
        grad = grad[0].float()
        cand = weight[torch.tensor([int(v) for v in candidates], device=weight.device)].float()
        current = weight[int(continuation[0])].float()
        return float(reward.detach()), ((cand - current) @ grad).cpu()
