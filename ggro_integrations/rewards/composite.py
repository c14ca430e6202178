"""Weighted sums of reward models: ``{"safety": 1.0, "helpfulness": 0.5}``.

A composite's reward is ``Σ w_i · r_i``. Its gradient gains are the same
weighted sum of each component's gains (the gradient is linear), and every
score carries each component's own (unweighted) reward, which the decoder
copies into ``CandidateTrial.reward_components`` and
``InterventionEvent.base_reward_components`` / ``best_reward_components``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any, Union

import torch

from ..conversation import Conversation
from ..errors import RewardModelError
from .base import RewardModel, RewardScores, RewardSession, TokenIds

ComponentSpec = Union[Mapping[RewardModel, float], Sequence[tuple]]
"""``{reward_model: weight}``, or ``[(reward_model, weight), ...]`` / ``[(reward_model, weight, name), ...]``.

Components are ``RewardModel`` instances; to build a composite from names, hub ids or paths,
pass the ``{spec: weight}`` mapping to ``load_reward_model``, which resolves them (cached)."""

Component = tuple[Any, float, str]
"""``(member, weight, name)``: a checked component (``member`` is not yet loaded in a registry spec)."""


def check_weight(name: str, weight: Any, allow_negative: bool) -> float:
    """Validate one composite weight: a finite real number, non-negative unless allowed."""
    if isinstance(weight, bool) or not isinstance(weight, (Real, torch.Tensor)):
        raise RewardModelError(f"weight of reward component {name!r} must be a number; got {weight!r}.")
    value = float(weight)
    if not math.isfinite(value):
        raise RewardModelError(f"weight of reward component {name!r} must be finite; got {value}.")
    if value < 0 and not allow_negative:
        raise RewardModelError(
            f"weight of reward component {name!r} is negative ({value}); a negative weight makes GGRO steer "
            "*against* that reward. Pass allow_negative=True if that is what you want."
        )
    return value


def check_components(components: Any, allow_negative: bool) -> list[Component]:
    """Validate a composite's shape, weights and names, without loading anything.

    The registry calls this on a ``{spec: weight}`` mapping before it loads any model (a typo
    must not cost a load); ``CompositeReward`` calls it on the loaded instances.
    """
    if isinstance(components, Mapping):
        items: list[Any] = list(components.items())
    elif isinstance(components, Sequence) and not isinstance(components, (str, bytes)):
        items = list(components)
    else:
        raise RewardModelError(
            f"components must be a {{reward_model: weight}} mapping or a list of (reward_model, weight[, name]) "
            f"tuples; got {type(components).__name__}."
        )
    if not items:
        raise RewardModelError("a composite reward needs at least one (reward model, weight) component.")
    checked: list[Component] = []
    for item in items:
        if not isinstance(item, tuple) or len(item) not in (2, 3):
            raise RewardModelError(f"each component must be (reward_model, weight[, name]); got {item!r}.")
        member = item[0]
        name = str(item[2] if len(item) == 3 else member if isinstance(member, str) else getattr(member, "name", member))
        checked.append((member, check_weight(name, item[1], allow_negative), name))
    names = [n for _, _, n in checked]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RewardModelError(
            f"reward components must have distinct names; {duplicates} appear more than once. "
            "Name them explicitly with (reward_model, weight, name) tuples."
        )
    if all(w == 0 for _, w, _ in checked):
        raise RewardModelError("all composite weights are zero; the reward would be constant.")
    return checked


class CompositeReward(RewardModel):
    """A weighted sum of reward models, reporting each component's score.

    Example:
        >>> CompositeReward([(safety, 1.0, "safety"), (helpful, 0.5, "helpful")])    # doctest: +SKIP
        >>> load_reward_model({"safety-rm": 1.0, "helpful-rm": 0.5})                 # doctest: +SKIP
    """

    def __init__(self, components: ComponentSpec, *, allow_negative: bool = False, name: str | None = None) -> None:
        entries = check_components(components, allow_negative)
        for member, _, label in entries:
            if not isinstance(member, RewardModel):
                raise RewardModelError(
                    f"reward component {label!r} is a {type(member).__name__}, not a RewardModel. CompositeReward "
                    f"takes loaded reward models; to combine names, hub ids or paths use "
                    f"load_reward_model({{{label!r}: weight, ...}})."
                )
        self.models: list[RewardModel] = [m for m, _, _ in entries]
        self.weights = [w for _, w, _ in entries]
        self.names = [n for _, _, n in entries]
        self.name = name or " + ".join(f"{w:g}*{n}" for w, n in zip(self.weights, self.names))

    def check_policy_tokenizer(self, policy_tokenizer: Any) -> None:
        for model in self.models:
            model.check_policy_tokenizer(policy_tokenizer)

    @property
    def supports_gradient(self) -> bool:
        return all(m.supports_gradient for m in self.models)

    @property
    def component_names(self) -> list[str]:
        return list(self.names)

    def session(
        self, conversation: Conversation, policy_tokenizer: Any, *, allow_special_tokens_in_content: bool = False
    ) -> RewardSession:
        # Checked sessions per component: a NaN or a bad shape is reported under the component's name.
        sessions = [
            m.open_session(conversation, policy_tokenizer, allow_special_tokens_in_content=allow_special_tokens_in_content)
            for m in self.models
        ]
        return CompositeSession(self, sessions)


class CompositeSession(RewardSession):
    """One session per component; scores and gains are their weighted sums."""

    def __init__(self, reward: CompositeReward, sessions: list[RewardSession]) -> None:
        super().__init__()
        self.reward = reward
        self.sessions = sessions

    def _sync_usage(self) -> None:
        self.usage = type(self.usage)()
        for s in self.sessions:
            self.usage.add(s.usage)

    def score(self, prefix: TokenIds, continuations: Sequence[TokenIds]) -> RewardScores:
        total = torch.zeros(len(continuations), dtype=torch.float32)
        components: dict[str, torch.Tensor] = {}
        for name, weight, session in zip(self.reward.names, self.reward.weights, self.sessions):
            scores = session.score(prefix, continuations)
            total += weight * scores.values
            components[name] = scores.values
            # Nested composites: keep their parts too, qualified by this component's name.
            components.update({f"{name}.{k}": v for k, v in scores.components.items()})
        self._sync_usage()
        return RewardScores(total, components)

    def gradient_gains(self, prefix: TokenIds, continuation: TokenIds, candidates: TokenIds) -> torch.Tensor:
        total = torch.zeros(len(candidates), dtype=torch.float32)
        for weight, session in zip(self.reward.weights, self.sessions):
            if weight != 0:
                total += weight * session.gradient_gains(prefix, continuation, candidates).float()
        self._sync_usage()
        return total

    def score_and_gradient_gains(
        self, prefix: TokenIds, continuation: TokenIds, candidates: TokenIds
    ) -> tuple[RewardScores, torch.Tensor]:
        """Each component's reward and gains, from its own combined pass where it has one."""
        value = torch.zeros(1, dtype=torch.float32)
        gains = torch.zeros(len(candidates), dtype=torch.float32)
        components: dict[str, torch.Tensor] = {}
        for name, weight, session in zip(self.reward.names, self.reward.weights, self.sessions):
            scores, part = session.score_and_gradient_gains(prefix, continuation, candidates)
            value += weight * scores.values
            gains += weight * part.float()
            components[name] = scores.values
            components.update({f"{name}.{k}": v for k, v in scores.components.items()})
        self._sync_usage()
        return RewardScores(value, components), gains
