"""GGRO's options as pydantic fields: the one set of knob names both adapters expose.

``GGROOptionFields`` declares every ``GGROConfig`` field (default ``None``:
"whatever the decoder is configured with"), ``strategy`` and ``reward_model``,
each with a one-line docstring. The LangChain and LlamaIndex models inherit it,
so ``ChatGGRO(entropy_threshold=2.5)`` and ``GGROLLM(entropy_threshold=2.5)``
mean the same thing, and both turn their fields into the core's
``CallOptions`` the same way. (pydantic, not torch: adapters only.)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from .config import config_field_names
from .decoding.call import CallOptions, Strategy, reward_label

KNOBS: tuple[str, ...] = tuple(config_field_names())
"""The ``GGROConfig`` fields, each also a field of every adapter model."""


class GGROOptionFields(BaseModel):
    """Every GGRO option as a field; ``None`` leaves the decoder's own setting in force."""

    # Attribute docstrings become field descriptions (shown for configurable fields).
    model_config = ConfigDict(populate_by_name=True, use_attribute_docstrings=True, protected_namespaces=())

    reward_model: Any = None
    """Reward model: a registered name, hub id, path, RewardModel or {name: weight}; None = the decoder's."""
    strategy: Strategy = "ggro"
    """"ggro", or the "greedy" / "best_of_n" baselines (same interface, no interventions)."""

    entropy_threshold: float | None = None
    """Entropy (nats) at or above which GGRO may intervene; None = the decoder's."""
    num_refinements: int | None = None
    """Most nudged candidates tried per trigger (0 = plain decoding); None = the decoder's."""
    nudge_top_k: int | None = None
    """Nudges come from the policy's own top-K tokens; None = the decoder's."""
    nudge_temperature: float | None = None
    """Temperature β of sampled nudge selection; None = the decoder's."""
    nudge_selection: Literal["greedy", "sample"] | None = None
    """"greedy" (highest predicted gain) or "sample" (∝ exp(gain/β)); None = the decoder's."""
    nudge_scoring: Literal["gradient", "exact"] | None = None
    """"gradient" (one backward pass) or "exact" (score every swap); None = the decoder's."""
    min_segment_tokens: int | None = None
    """Fewest tokens between two triggers; None = the decoder's."""
    max_new_tokens: int | None = Field(default=None, alias="max_tokens")
    """Token budget of the response (``max_tokens`` is accepted too); None = the decoder's."""
    temperature: float | None = None
    """Base decoding temperature, 0 = greedy; None = the decoder's."""
    top_p: float | None = None
    """Nucleus mass of the base rule when sampling; None = the decoder's."""
    seed: int | None = None
    """Seed for sampled decoding and nudges (same seed, same output); None = the decoder's."""
    stop: list[str] | None = None
    """Stop sequences (any length, matched exactly in the text); the text ends before the first one."""
    refinement: Literal["sequential", "parallel"] | None = None
    """"sequential" (the paper) or "parallel" (one batch of candidates per trigger); None = the decoder's."""
    best_of_n: int | None = None
    """N of the "best_of_n" strategy; None = the decoder's."""
    best_of_n_temperature: float | None = None
    """Sampling temperature of the Best-of-N baseline; None = the decoder's."""
    use_chat_template: bool | None = None
    """Format string prompts with the policy's chat template; None = the decoder's (yes when it has one)."""
    allow_special_tokens_in_content: bool | None = None
    """Read control strings inside message text as special tokens (pre-templated text); None = the decoder's (no)."""

    @field_serializer("reward_model")
    def _reward_by_name(self, value: Any) -> Any:
        return reward_label(value)

    def call_options(self) -> CallOptions:
        """The options these fields set, as the core's ``CallOptions``."""
        values: dict[str, Any] = {name: getattr(self, name) for name in KNOBS}
        values["strategy"] = self.strategy
        values["reward_model"] = self.reward_model
        return CallOptions.parse(values, where=type(self).__name__)

    def option_values(self) -> dict[str, Any]:
        """The options set on this model (not None), by name."""
        return {name: getattr(self, name) for name in (*KNOBS, "strategy", "reward_model") if getattr(self, name) is not None}
