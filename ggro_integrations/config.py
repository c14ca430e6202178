"""``GGROConfig``: every knob of GGRO decoding, validated on construction."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from .errors import ConfigError

NudgeSelection = Literal["greedy", "sample"]
NudgeScoring = Literal["gradient", "exact"]
Refinement = Literal["sequential", "parallel"]


@dataclass(frozen=True)
class GGROConfig:
    """Configuration of a GGRO decoder.

    Defaults follow the paper (Lin & Zhang, 2026) except ``entropy_threshold``,
    whose paper value (1.5 nats) was set for 8B models; see ``docs/config.md``.

    Example:
        >>> cfg = GGROConfig(entropy_threshold=2.0, num_refinements=4)
        >>> cfg.replace(max_new_tokens=64).max_new_tokens
        64
    """

    entropy_threshold: float = 1.5
    """Entropy (nats) of the policy's next-token distribution at or above which GGRO may intervene."""
    num_refinements: int = 8
    """S: most nudged candidates tried per trigger; 0 turns GGRO into plain decoding."""
    nudge_top_k: int = 25
    """K: nudges are drawn only from the policy's own K most likely tokens."""
    nudge_temperature: float = 0.1
    """β: temperature of ``exp(gain / β)`` when ``nudge_selection="sample"``."""
    nudge_selection: NudgeSelection = "greedy"
    """``"greedy"`` takes the candidate with the highest predicted gain; ``"sample"`` samples ∝ exp(gain/β)."""
    nudge_scoring: NudgeScoring = "gradient"
    """``"gradient"``: first-order gains from one backward pass; ``"exact"``: score every top-K swap directly."""
    min_segment_tokens: int = 4
    """m: fewest tokens between two triggers."""
    max_new_tokens: int = 128
    """Token budget of the response."""
    temperature: float = 0.0
    """Base decoding temperature; 0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass for the base rule (only used when ``temperature > 0``)."""
    seed: int | None = None
    """Seed for sampled decoding and sampled nudges; the same seed reproduces the same output."""
    stop: tuple[str, ...] = ()
    """Stop sequences: the response ends right before the first occurrence of any of them."""
    refinement: Refinement = "sequential"
    """``"sequential"`` (the paper): one candidate at a time; ``"parallel"``: all candidates from one gradient, decoded as one batch."""
    best_of_n: int = 8
    """N for the ``"best_of_n"`` baseline strategy."""
    best_of_n_temperature: float = 0.7
    """Sampling temperature of the Best-of-N baseline when ``temperature`` is 0."""
    use_chat_template: bool | None = None
    """Format string prompts with the policy's chat template: None = when the tokenizer has one."""
    allow_special_tokens_in_content: bool = False
    """Read control strings (``<|im_start|>`` ...) inside message text as special tokens; off: they stay text."""

    def __post_init__(self) -> None:
        stop = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        elif stop is None:
            stop = ()
        else:
            stop = tuple(stop)
        object.__setattr__(self, "stop", stop)
        _validate(self)

    def replace(self, **overrides: Any) -> GGROConfig:
        """A copy with ``overrides`` applied and validated; ``None`` values are ignored."""
        overrides = {k: v for k, v in overrides.items() if v is not None or k == "seed"}
        unknown = sorted(set(overrides) - set(config_field_names()))
        if unknown:
            raise ConfigError(
                f"Unknown GGRO option(s) {unknown}; valid options are: {', '.join(config_field_names())}."
            )
        if not overrides:
            return self
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field."""
        return {
            name: (list(v) if isinstance(v, tuple) else v)
            for name in config_field_names()
            for v in [getattr(self, name)]
        }


def config_field_names() -> list[str]:
    """Names of the public ``GGROConfig`` fields, in declaration order."""
    return [f.name for f in dataclasses.fields(GGROConfig) if not f.name.startswith("_")]


def _validate(cfg: GGROConfig) -> None:
    def number(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number; got {value!r}.")
        return float(value)

    def integer(name: str, value: Any, minimum: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer; got {value!r}.")
        if value < minimum:
            raise ConfigError(f"{name} must be >= {minimum}; got {value}.")

    def choice(name: str, value: Any, options: Sequence[str]) -> None:
        if value not in options:
            raise ConfigError(f"{name} must be one of {list(options)}; got {value!r}.")

    if number("entropy_threshold", cfg.entropy_threshold) < 0:
        raise ConfigError(
            f"entropy_threshold must be >= 0 nats; got {cfg.entropy_threshold}. "
            "Entropy is never negative; 0 makes every position a trigger candidate."
        )
    integer("num_refinements", cfg.num_refinements, 0)
    integer("nudge_top_k", cfg.nudge_top_k, 1)
    if number("nudge_temperature", cfg.nudge_temperature) <= 0:
        raise ConfigError(f"nudge_temperature must be > 0; got {cfg.nudge_temperature}.")
    choice("nudge_selection", cfg.nudge_selection, ("greedy", "sample"))
    choice("nudge_scoring", cfg.nudge_scoring, ("gradient", "exact"))
    integer("min_segment_tokens", cfg.min_segment_tokens, 1)
    integer("max_new_tokens", cfg.max_new_tokens, 1)
    if number("temperature", cfg.temperature) < 0:
        raise ConfigError(f"temperature must be >= 0 (0 = greedy); got {cfg.temperature}.")
    top_p = number("top_p", cfg.top_p)
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1]; got {cfg.top_p}.")
    if cfg.seed is not None:
        integer("seed", cfg.seed, 0)
    for s in cfg.stop:
        if not isinstance(s, str) or not s:
            raise ConfigError(f"stop sequences must be non-empty strings; got {s!r}.")
    choice("refinement", cfg.refinement, ("sequential", "parallel"))
    integer("best_of_n", cfg.best_of_n, 1)
    if number("best_of_n_temperature", cfg.best_of_n_temperature) <= 0:
        raise ConfigError(f"best_of_n_temperature must be > 0; got {cfg.best_of_n_temperature}.")
    if cfg.use_chat_template is not None and not isinstance(cfg.use_chat_template, bool):
        raise ConfigError(f"use_chat_template must be True, False or None; got {cfg.use_chat_template!r}.")
    if not isinstance(cfg.allow_special_tokens_in_content, bool):
        raise ConfigError(
            f"allow_special_tokens_in_content must be True or False; got {cfg.allow_special_tokens_in_content!r}."
        )
