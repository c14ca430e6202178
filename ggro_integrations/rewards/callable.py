"""Custom text scorers: any Python callable that scores response texts.

``TextScorerReward(fn)`` wraps ``fn(prompt, responses) -> list[float]``: one
score per response, higher is better. It sees text, not embeddings, so it has
no gradient: GGRO uses it with ``nudge_scoring="exact"`` (each top-K swap is
scored directly, in one batched call per trigger). For gradient guidance with
your own differentiable reward, use ``EmbeddingReward`` (rewards/module.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from ..conversation import Conversation, plain_text
from ..errors import RewardModelError
from .base import RewardModel, RewardScores, RewardSession, TokenIds, check_scores

TextScorer = Callable[[Any, list[str]], Sequence[float]]
"""``fn(prompt, responses)``: ``prompt`` is plain text or the message list (see ``prompt_format``)."""


class TextScorerReward(RewardModel):
    """A user-supplied, non-differentiable scorer of (prompt, response texts).

    Example:
        >>> polite = TextScorerReward(lambda prompt, responses: [r.count("please") for r in responses])
        >>> polite.supports_gradient
        False
    """

    def __init__(
        self,
        scorer: TextScorer,
        *,
        name: str | None = None,
        prompt_format: Literal["text", "messages"] = "text",
    ) -> None:
        if not callable(scorer):
            raise RewardModelError(
                f"scorer must be callable as scorer(prompt, responses); got {type(scorer).__name__}."
            )
        if prompt_format not in ("text", "messages"):
            raise RewardModelError(f"prompt_format must be 'text' or 'messages'; got {prompt_format!r}.")
        self.scorer = scorer
        self.prompt_format = prompt_format
        self.name = name or getattr(scorer, "__name__", None) or type(scorer).__name__
        if self.name == "<lambda>":
            self.name = "custom-scorer"

    @property
    def supports_gradient(self) -> bool:
        return False

    def session(self, conversation: Conversation, policy_tokenizer: Any) -> RewardSession:
        prompt: Any = plain_text(conversation) if self.prompt_format == "text" else [dict(m) for m in conversation]
        return TextScorerSession(self, prompt, policy_tokenizer)


class TextScorerSession(RewardSession):
    """Decodes policy ids to text and calls the scorer once per batch."""

    def __init__(self, reward: TextScorerReward, prompt: Any, policy_tokenizer: Any) -> None:
        super().__init__()
        self.reward = reward
        self.prompt = prompt
        self.tokenizer = policy_tokenizer

    def score(self, prefix: TokenIds, continuations: Sequence[TokenIds]) -> RewardScores:
        head = [int(t) for t in prefix]
        # Decode prefix and continuation together: a character may span their boundary.
        texts = [self.tokenizer.decode(head + [int(t) for t in c], skip_special_tokens=True) for c in continuations]
        try:
            raw = self.reward.scorer(self.prompt, texts)
        except RewardModelError:
            raise
        except Exception as exc:
            raise RewardModelError(f"reward scorer {self.reward.name!r} raised {type(exc).__name__}: {exc}") from exc
        values = check_scores(raw, len(texts), f"reward scorer {self.reward.name!r}")
        self.usage.forward_calls += 1
        self.usage.sequences_scored += len(texts)
        return RewardScores(values)
