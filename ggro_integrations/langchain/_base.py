"""Fields and behaviour GGROLLM and ChatGGRO share: every GGRO knob, the decoder, per-call options.

Every knob defaults to ``None``, meaning "whatever the decoder is configured
with", so ``ChatGGRO(decoder=d)`` behaves exactly like ``d``; a value set here
(or per call, or through ``configurable_fields``) overrides it for that call.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .._version import __version__
from ..config import GGROConfig, config_field_names
from ..decoding import GGRODecoder, GGROResult
from ..errors import ConfigError
from ..events import InterventionEvent
from ..models import DEFAULT_POLICY_ID
from ..rewards.base import RewardModel
from ._runtime import RUN_KWARG, AsyncEmit, SyncEmit, iterate_in_thread, run_in_thread

# LangChain's standard constructor parameters for hosted models. A local policy has no key,
# network timeout or retries; accepting (and ignoring) them keeps code written for other chat
# models, and LangChain's standard tests, working unchanged.
IGNORED_STANDARD_PARAMS = ("api_key", "timeout", "max_retries")

KNOBS: tuple[str, ...] = tuple(config_field_names())
"""The GGROConfig fields, each also a field of GGROLLM / ChatGGRO."""

CALL_OPTIONS = (*KNOBS, "reward_model", "strategy", "max_tokens", "model")
"""Keyword arguments accepted per call (``invoke(..., entropy_threshold=2.0)``) besides ``stop``."""

Strategy = Literal["ggro", "greedy", "best_of_n"]


def reward_label(spec: Any) -> Any:
    """A JSON-friendly name for a reward-model spec (instances by their name)."""
    if isinstance(spec, RewardModel):
        return spec.name
    if isinstance(spec, dict):
        return {reward_label(k): v for k, v in spec.items()}
    return spec


@dataclass
class CallPlan:
    """Everything one call passes to the decoder."""

    prompt: Any
    strategy: str
    reward: RewardModel | None
    overrides: dict[str, Any]
    tools: list[dict[str, Any]] | None = None

    @property
    def streams(self) -> bool:
        """Whether the decoder can stream this strategy (Best-of-N knows its answer only at the end)."""
        return self.strategy != "best_of_n"

    def decoder_kwargs(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "reward_model": self.reward, "tools": self.tools, **self.overrides}


class GGROFields(BaseModel):
    """The pydantic fields and helpers common to ``GGROLLM`` and ``ChatGGRO``."""

    # Attribute docstrings become field descriptions (shown for configurable fields).
    model_config = ConfigDict(
        populate_by_name=True, arbitrary_types_allowed=True, protected_namespaces=(), use_attribute_docstrings=True
    )

    _ls_model_type: ClassVar[str] = "llm"

    model_id: str = Field(default="default", alias="model")
    """Policy loaded when no decoder is given: "default" (SmolLM2-135M-Instruct), a hub id or a local path."""
    reward_model: Any = None
    """Reward model: a registered name, hub id, path, RewardModel or {name: weight}; None = the decoder's."""
    decoder: GGRODecoder | None = Field(default=None, exclude=True)
    """The shared GGRODecoder doing the work; built from model_id and reward_model when not given."""
    device: str | None = None
    """Device for models loaded by name ("cpu", "cuda", ...); None = CPU."""
    dtype: str | None = None
    """Torch dtype name for models loaded by name ("float32", "bfloat16", ...); None = the checkpoint's."""
    trust_remote_code: bool = False
    """Allow custom model code from the hub when loading model_id (off: it would run downloaded code)."""
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
    """Token budget of the response (LangChain's ``max_tokens`` is accepted too); None = the decoder's."""
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
    streaming: bool | None = None
    """True makes ``invoke`` stream internally, so ``on_llm_new_token`` callbacks fire."""

    # -- construction -----------------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _check_ggro_options(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        values = {k: v for k, v in values.items() if k not in IGNORED_STANDARD_PARAMS}
        known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{cls.__name__} has no option {key!r}.{hint} GGRO options: {', '.join(KNOBS)}.")
        return values

    @field_validator("device", "dtype", mode="before")
    @classmethod
    def _torch_objects_as_names(cls, value: Any) -> Any:
        # torch.device("cuda:0") -> "cuda:0", torch.bfloat16 -> "bfloat16": names keep the model
        # serialisable and give the registry the same cache key as a name passed directly.
        if value is None or isinstance(value, str):
            return value
        import torch

        if isinstance(value, torch.device):
            return str(value)
        if isinstance(value, torch.dtype):
            return str(value).removeprefix("torch.")
        return value

    @model_validator(mode="after")
    def _build_ggro_decoder(self) -> Any:
        if self.decoder is None:
            from ..factory import build_decoder

            self.decoder = build_decoder(
                self.model_id,
                self.reward_model,
                device=self.device,
                dtype=self.dtype,
                trust_remote_code=self.trust_remote_code,
            )
        elif "model_id" not in self.model_fields_set:
            self.model_id = _policy_name(self.decoder.model)  # so traces name the real policy
        self.decoder.config.replace(**self._field_overrides())  # fail at construction, not at the first call
        return self

    @model_validator(mode="after")
    def _set_ggro_version(self) -> Any:
        self._add_version("ggro-integrations", __version__)  # type: ignore[attr-defined]
        return self

    # -- options ------------------------------------------------------------------

    def _field_overrides(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in KNOBS if getattr(self, name) is not None}

    def _overrides(self, stop: Sequence[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Knob values for one call: fields, then per-call kwargs, then LangChain's ``stop``."""
        overrides = self._field_overrides()
        if "max_tokens" in kwargs:
            overrides["max_new_tokens"] = kwargs["max_tokens"]
        overrides.update({k: v for k, v in kwargs.items() if k in KNOBS and v is not None})
        if stop is not None:
            overrides["stop"] = list(stop)
        return overrides

    def _effective_config(self, stop: Sequence[str] | None = None, **kwargs: Any) -> GGROConfig:
        assert self.decoder is not None
        return self.decoder.config.replace(**self._overrides(stop, kwargs))

    def _plan(
        self, prompt: Any, stop: Sequence[str] | None, kwargs: dict[str, Any], extra: Sequence[str] = ()
    ) -> CallPlan:
        """Validate one call's options and turn them into decoder arguments."""
        unknown = sorted(set(kwargs) - set(CALL_OPTIONS) - set(extra) - {RUN_KWARG})
        if unknown:
            raise ConfigError(
                f"{type(self).__name__} got unknown option(s) {unknown}; per-call options are: "
                f"{', '.join(CALL_OPTIONS)}."
            )
        model = kwargs.get("model")
        if model is not None and model != self.model_id:
            raise ConfigError(
                f"model={model!r} differs from this {type(self).__name__}'s policy {self.model_id!r}; a GGRO model "
                "is bound to one policy. Build another one with from_model_id(model_id=...)."
            )
        strategy = kwargs.get("strategy") or self.strategy
        if strategy not in ("ggro", "greedy", "best_of_n"):
            raise ConfigError(f"strategy must be 'ggro', 'greedy' or 'best_of_n'; got {strategy!r}.")
        overrides = self._overrides(stop, kwargs)
        assert self.decoder is not None
        self.decoder.config.replace(**overrides)  # validates before any work starts
        reward = self._resolve_reward(kwargs.get("reward_model", self.reward_model))
        return CallPlan(prompt, strategy, reward, overrides)

    def _resolve_reward(self, spec: Any) -> RewardModel | None:
        """The reward model for a call (None = the decoder's), resolved with the decoder's device so the
        registry's cache (keyed by spec, device and dtype) returns the already-loaded model."""
        if spec is None or isinstance(spec, RewardModel):
            return spec
        from ..rewards.registry import load_reward_model

        device = self.device
        if device is None:
            policy_device = self._policy_device()
            device = None if policy_device.type == "cpu" else str(policy_device)
        return load_reward_model(spec, device=device, dtype=self.dtype)

    def _policy_device(self) -> Any:
        assert self.decoder is not None
        return self.decoder.model.get_input_embeddings().weight.device

    # -- running ------------------------------------------------------------------

    def _run(self, plan: CallPlan, emit: SyncEmit) -> GGROResult:
        """Decode, sending each intervention to ``emit`` as soon as GGRO decides it."""
        assert self.decoder is not None
        if not plan.streams:
            return self.decoder.generate(plan.prompt, **plan.decoder_kwargs())
        stream = self.decoder.stream(plan.prompt, **plan.decoder_kwargs())
        for item in stream:
            if isinstance(item, InterventionEvent):
                emit(item)
        assert stream.result is not None
        return stream.result

    async def _arun(self, plan: CallPlan, emit: AsyncEmit) -> GGROResult:
        """``_run`` off the event loop: decoding happens in a worker thread."""
        assert self.decoder is not None
        if not plan.streams:
            return await run_in_thread(
                self.decoder.generate, plan.prompt, device=self._policy_device(), **plan.decoder_kwargs()
            )
        stream = self.decoder.stream(plan.prompt, **plan.decoder_kwargs())
        async for item in iterate_in_thread(stream, self._policy_device()):
            if isinstance(item, InterventionEvent):
                await emit(item)
        assert stream.result is not None
        return stream.result

    # -- LangChain metadata ----------------------------------------------------------

    def _model_name(self) -> str:
        return DEFAULT_POLICY_ID if self.model_id == "default" else self.model_id

    def _reward_name(self) -> Any:
        if self.reward_model is not None:
            return reward_label(self.reward_model)
        reward = self.decoder.reward_model if self.decoder is not None else None
        return reward.name if reward is not None else None

    @property
    def _identifying_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model_id": self.model_id,
            "reward_model": self._reward_name(),
            "strategy": self.strategy,
        }
        if self.decoder is not None:
            params.update(self._effective_config().to_dict())
        return params

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        from langchain_core.language_models.base import LangSmithParams

        params = LangSmithParams(
            ls_provider="ggro",
            ls_model_name=kwargs.get("model") or self._model_name(),
            ls_model_type=self._ls_model_type,  # type: ignore[typeddict-item]
        )
        try:
            cfg = self._effective_config(stop, **kwargs)
        except (ConfigError, AssertionError):
            return params  # tracing metadata must never fail a call; the call itself reports the error
        params["ls_temperature"] = cfg.temperature
        params["ls_max_tokens"] = cfg.max_new_tokens
        if cfg.stop:
            params["ls_stop"] = list(cfg.stop)
        return params

    def _clean_invocation_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Per-call kwargs as they should appear in traces: no private run handle, reward by name."""
        kwargs = {k: v for k, v in kwargs.items() if k != RUN_KWARG}
        if "reward_model" in kwargs:
            kwargs["reward_model"] = reward_label(kwargs["reward_model"])
        return kwargs

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` under the policy's own tokenizer (never a tokenizer from the Hub)."""
        assert self.decoder is not None
        return list(self.decoder.tokenizer.encode(text, add_special_tokens=False))


def result_metadata(result: GGROResult, model_name: str) -> dict[str, Any]:
    """What a response carries besides its text: reward, interventions (full and summarised), work done."""
    accepted = result.accepted_interventions
    return {
        "model_name": model_name,
        "finish_reason": result.finish_reason,
        "reward": result.reward,
        "reward_model": result.reward_model,
        "reward_components": dict(result.reward_components),
        "strategy": result.strategy,
        "ggro_summary": {
            "triggers": len(result.interventions),
            "accepted": len(accepted),
            "reward_gain": sum(e.reward_gain for e in accepted),
            "accepted_at": [e.char_offset for e in accepted],
        },
        "ggro_interventions": [e.to_dict() for e in result.interventions],
        "ggro_stats": result.stats.to_dict(),
    }


def _policy_name(model: Any) -> str:
    """How a preloaded policy is named in traces: "default" for the embedded default, else its path or id."""
    from ..models import default_policy_dir

    path = getattr(model.config, "_name_or_path", "") or ""
    if path and os.path.abspath(path) == os.path.abspath(default_policy_dir()):
        return "default"
    return path or type(model).__name__
