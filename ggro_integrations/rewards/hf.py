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

import weakref
from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ..conversation import Conversation
from ..errors import RewardModelError
from ..loading import device_name, parse_dtype, pretrained_kwargs, resolve_source
from .base import RewardModel, RewardScores, RewardSession, TokenIds
from .cross_tokenizer import CrossTokenizerSession
from .formatting import template_parts
from .prefix_cache import PrefixCache
from .vocab import shares_vocabulary


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
        source = resolve_source(model_id)
        if source.kind == "missing":
            raise RewardModelError(f"reward model path {model_id!r} does not exist.")
        location = source.location if source.kind == "local" else model_id
        kwargs = pretrained_kwargs(location, dtype=parse_dtype(dtype), trust_remote_code=trust_remote_code)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(location, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
        except OSError as exc:
            raise RewardModelError(f"could not load reward model {model_id!r}: {exc}") from exc
        dev = device_name(device)
        if dev is not None:
            model.to(dev)
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

    def session(
        self, conversation: Conversation, policy_tokenizer: Any, *, allow_special_tokens_in_content: bool = False
    ) -> RewardSession:
        before, after = template_parts(
            self.tokenizer, conversation, allow_special_tokens_in_content=allow_special_tokens_in_content
        )
        if self.shares_vocabulary_with(policy_tokenizer):
            return SharedVocabSession(self, before, after)
        self.check_policy_tokenizer(policy_tokenizer)
        return CrossTokenizerSession(self, before, after, policy_tokenizer)


class SharedVocabSession(RewardSession):
    """Scores policy-id responses with an ``HFRewardModel`` over the same vocabulary."""

    def __init__(self, reward: HFRewardModel, before_ids: list[int], after_ids: list[int]) -> None:
        super().__init__()
        self.reward = reward
        self.prefix = PrefixCache(reward, before_ids, after_ids, self.usage)

    def score(self, prefix: TokenIds, continuations: Sequence[TokenIds]) -> RewardScores:
        return RewardScores(self.prefix.score(prefix, continuations))

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
        """One forward + backward over the continuation: its reward and every candidate's gain
        ``(E[v] - E[c]) · ∂r/∂e`` at the trigger token ``c = continuation[0]``."""
        if not continuation:
            raise ValueError("continuation must hold at least the trigger token")
        out = self.prefix.gradient(prefix, continuation, leaves=1)
        if out is None:
            return None, torch.zeros(len(candidates))
        reward, grad = out
        weight = self.reward.embeddings.weight
        cand = weight[torch.tensor([int(v) for v in candidates], device=weight.device)].float()
        current = weight[int(continuation[0])].float()
        return reward, ((cand - current) @ grad[0]).cpu()
