"""One call's options, parsed and validated once, whatever front door they came through.

Every front door (``GGRODecoder.generate``, the CLI, LangChain, LlamaIndex)
speaks one vocabulary: the ``GGROConfig`` field names plus ``strategy``,
``reward_model`` and ``tools``. ``CallOptions.parse`` turns a mapping in that
vocabulary into options (unknown names fail with a suggestion), and
``GGRODecoder.prepare`` turns options and a prompt into a ``PreparedCall`` —
config validated, reward model resolved and checked, prompt encoded and
measured — before any decoding starts.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from ..config import GGROConfig, config_field_names
from ..conversation import Conversation
from ..errors import ConfigError

if TYPE_CHECKING:  # imported where used: the CLI reads STRATEGIES from here without importing torch
    from ..rewards.base import RewardModel

Strategy = Literal["ggro", "greedy", "best_of_n"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
"""``"ggro"``, and the two baselines that run through the same door."""

CALL_KEYS: tuple[str, ...] = (
    "strategy",
    "reward_model",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "grammar",
    "logits_processors",
)
"""Per-call options that are not ``GGROConfig`` fields (objects, not scalar knobs)."""

OPTION_NAMES: tuple[str, ...] = (*config_field_names(), *CALL_KEYS)
"""Every option a call accepts, in every front door."""

ALIASES: dict[str, str] = {"max_tokens": "max_new_tokens"}
"""Other spellings accepted for an option (LangChain's standard ``max_tokens``)."""

DEPRECATED: dict[str, str] = {"n": "best_of_n"}
"""Old spellings still accepted, with a ``DeprecationWarning``."""


def unknown_option_error(names: Sequence[str], where: str, valid: Sequence[str] = OPTION_NAMES) -> ConfigError:
    """``ConfigError`` for unknown option names, with a did-you-mean for each."""
    hints = []
    for name in names:
        close = difflib.get_close_matches(name, list(valid), n=1)
        hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    return ConfigError(f"{where} got unknown option(s) {', '.join(hints)}; valid options are: {', '.join(valid)}.")


@dataclass(frozen=True)
class CallOptions:
    """Options for one call. ``None`` (and absence) means "the decoder's setting"."""

    strategy: str | None = None
    """``"ggro"``, ``"greedy"`` or ``"best_of_n"``."""
    reward_model: Any = None
    """A ``RewardModel`` or any spec ``load_reward_model`` accepts."""
    tools: tuple[dict[str, Any], ...] | None = None
    """OpenAI-format tool schemas rendered by the chat template."""
    config: dict[str, Any] = field(default_factory=dict)
    """``GGROConfig`` overrides."""
    tool_choice: Any = None
    """With ``tools``: ``"auto"`` (default), ``"none"``, ``"required"``/``"any"`` or a tool name; calls are grammar-constrained."""
    parallel_tool_calls: bool | None = None
    """With ``tools``: allow several calls in one response (default False: small models repeat calls)."""
    grammar: Any = None
    """Constrain the whole response: a ``constraints.Grammar``, or a JSON schema (a dict) it is compiled from."""
    logits_processors: tuple[Any, ...] | None = None
    """transformers ``LogitsProcessor`` s (or ``fn(input_ids, scores)``) applied at every step, after the grammar."""

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None = None, *, where: str = "GGRO") -> CallOptions:
        """Options from a mapping in the one vocabulary; ``where`` names the caller in errors."""
        if not options:
            return cls()
        values: dict[str, Any] = {}
        for key, value in options.items():
            name = ALIASES.get(key, key)
            if key in DEPRECATED:
                name = DEPRECATED[key]
                warnings.warn(
                    f"{where}: option {key!r} is deprecated; use {name!r}.", DeprecationWarning, stacklevel=3
                )
            values[name] = value
        unknown = [k for k in options if ALIASES.get(k, DEPRECATED.get(k, k)) not in OPTION_NAMES]
        if unknown:
            raise unknown_option_error(unknown, where)
        strategy = values.pop("strategy", None)
        if strategy is not None and strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {list(STRATEGIES)}; got {strategy!r}.")
        tools = values.pop("tools", None)
        reward = values.pop("reward_model", None)
        objects = {k: values.pop(k, None) for k in ("tool_choice", "parallel_tool_calls", "grammar")}
        processors = values.pop("logits_processors", None)
        config = {k: v for k, v in values.items() if v is not None}
        return cls(
            strategy,
            reward,
            tuple(tools) if tools else None,
            config,
            logits_processors=tuple(processors) if processors else None,
            **objects,
        )

    def over(self, base: CallOptions) -> CallOptions:
        """These options layered over ``base``: whatever is set here wins."""
        def pick(name: str) -> Any:
            mine = getattr(self, name)
            return mine if mine is not None else getattr(base, name)

        return CallOptions(
            strategy=pick("strategy"),
            reward_model=pick("reward_model"),
            tools=pick("tools"),
            config={**base.config, **self.config},
            tool_choice=pick("tool_choice"),
            parallel_tool_calls=pick("parallel_tool_calls"),
            grammar=pick("grammar"),
            logits_processors=pick("logits_processors"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The set options in the one vocabulary (reward models by name)."""
        out: dict[str, Any] = dict(self.config)
        if self.strategy is not None:
            out["strategy"] = self.strategy
        if self.reward_model is not None:
            out["reward_model"] = reward_label(self.reward_model)
        if self.tools is not None:
            out["tools"] = list(self.tools)
        for name in ("tool_choice", "parallel_tool_calls"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.grammar is not None:
            out["grammar"] = self.grammar if isinstance(self.grammar, Mapping) else repr(self.grammar)
        if self.logits_processors is not None:
            out["logits_processors"] = [repr(p) for p in self.logits_processors]
        return out


@dataclass
class CallSettings:
    """Options resolved against a decoder: ``GGRODecoder.settle`` makes them (no prompt needed)."""

    config: GGROConfig
    """The effective configuration."""
    strategy: str
    reward: RewardModel | None
    """The reward model that steers (or judges) the call; None when neither the call nor the decoder names one."""
    tools: list[dict[str, Any]] | None = None
    grammar: Any = None
    """The compiled ``constraints.Grammar`` every step of the response must follow (tool calls, a schema), or None."""
    logits_processors: tuple[Any, ...] = ()
    """User logits processors, applied at every step after the grammar."""

    @property
    def needs_reward(self) -> bool:
        """Whether the strategy scores anything (GGRO with no refinements only monitors entropy)."""
        return self.strategy == "best_of_n" or (self.strategy == "ggro" and self.config.num_refinements > 0)


@dataclass
class PreparedCall(CallSettings):
    """A validated call, ready to decode: ``GGRODecoder.prepare`` makes one, ``generate``/``stream`` run it."""

    conversation: Conversation = field(default_factory=list)
    prompt_ids: list[int] = field(default_factory=list)
    """The formatted prompt in policy token ids."""


def reward_label(spec: Any) -> Any:
    """A JSON-friendly name for a reward-model spec (instances by their name)."""
    from ..rewards.base import RewardModel

    if isinstance(spec, RewardModel):
        return spec.name
    if isinstance(spec, Mapping):
        return {str(reward_label(k)): v for k, v in spec.items()}
    return spec
