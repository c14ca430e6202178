"""What ``ChatGGRO`` and ``GGROLLM`` share: the fields, one call's options, the public call methods.

Every GGRO option is a field (``GGROOptionFields``, the vocabulary LlamaIndex's
``GGROLLM`` uses too) defaulting to ``None``, meaning "whatever the decoder is
configured with", so ``ChatGGRO(decoder=d)`` behaves exactly like ``d``. A call
layers, each over the one before: fields, ``config["configurable"]``,
``bind()`` / per-call keywords. The decoder validates all of it
(``GGRODecoder.settle`` at construction, ``prepare`` per call): nothing here
re-checks what the core checks.
"""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

from langchain_core.language_models import LanguageModelInput
from langchain_core.runnables import ConfigurableFieldSpec, RunnableConfig, ensure_config
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from .._version import __version__
from ..config import GGROConfig
from ..conversation import Prompt
from ..decoding import CallOptions, GenerationStream, GGRODecoder, GGROResult, PreparedCall
from ..decoding.call import reward_label
from ..decoding.threads import AsyncGenerationStream
from ..errors import ConfigError, GGROError
from ..events import InterventionEvent
from ..loading import device_name, dtype_name
from ..models import DEFAULT_POLICY_ID
from ..options import KNOBS, GGROOptionFields
from . import _config
from ._runs import AsyncEmit, ModelRun, SyncEmit, open_run

# LangChain's standard constructor parameters for hosted models. A local policy has no key,
# network timeout or retries; accepting (and ignoring) them keeps code written for other chat
# models, and LangChain's standard tests, working unchanged.
IGNORED_STANDARD_PARAMS = ("api_key", "timeout", "max_retries")


class GGROFields(GGROOptionFields):
    """The fields and call plumbing common to ``GGROLLM`` and ``ChatGGRO`` (first in their MRO)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _ls_model_type: ClassVar[str] = "llm"
    _langchain_kwargs: ClassVar[tuple[str, ...]] = ("model", "stream")
    """Call keywords that are LangChain's, not GGRO options (``stream`` is read by BaseChatModel)."""

    model_id: str = Field(default="default", alias="model")
    """Policy loaded when no decoder is given: "default" (SmolLM2-135M-Instruct), a hub id or a local path."""
    decoder: GGRODecoder | None = Field(default=None, exclude=True)
    """The shared GGRODecoder doing the work; built from model_id and reward_model when not given."""
    device: str | None = None
    """Device for models loaded by name ("cpu", "cuda", ...); None = CPU."""
    dtype: str | None = None
    """Torch dtype name for models loaded by name ("float32", "bfloat16", ...); None = the checkpoint's."""
    trust_remote_code: bool = False
    """Allow custom model code from the hub when loading model_id (off: it would run downloaded code)."""
    streaming: bool | None = None
    """True makes ``invoke`` stream internally, so ``on_llm_new_token`` callbacks fire."""
    configurable_prefix: str = ""
    """Prefix of this model's config["configurable"] keys ("chat_" reads chat_entropy_threshold; "" the bare names)."""

    # -- construction -----------------------------------------------------------

    def __init__(self, **data: Any) -> None:
        # pydantic wraps a ValueError raised in a validator (our ConfigError, RewardModelError) in a
        # ValidationError; callers were promised the package's own error, naming the option and the fix.
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _construction_error(type(self).__name__, exc) from None

    @classmethod
    def from_server(
        cls,
        url: str,
        model: Any = "default",
        reward_model: Any = "default",
        *,
        engine: str = "llama.cpp",
        server_options: dict[str, Any] | None = None,
        device: Any = None,
        dtype: Any = None,
        **kwargs: Any,
    ) -> Any:
        """The policy served at ``url`` (llama-server, vLLM or SGLang: ``engine``), the reward model here.

        ``model`` names the served model's tokenizer, loaded locally (``"default"``: the embedded
        default's); ``reward_model`` loads on ``device``; ``server_options`` go to ``ServerBackend``;
        other keywords are fields and GGRO options, as for ``from_model_id``. Concurrent ``ainvoke`` /
        ``abatch`` calls become concurrent requests the engine batches.

        Example:
            >>> chat = ChatGGRO.from_server("http://127.0.0.1:8080", max_new_tokens=64)  # doctest: +SKIP
        """
        from ..factory import build_decoder

        decoder = build_decoder(model, reward_model, server=url, engine=engine, server_options=server_options,
                                device=device, dtype=dtype)
        name = model if isinstance(model, str) else decoder.backend.name
        return cls(decoder=decoder, model=name, device=device, dtype=dtype, **kwargs)

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
    def _torch_objects_as_names(cls, value: Any, info: Any) -> Any:
        # torch.device("cuda:0") -> "cuda:0", torch.bfloat16 -> "bfloat16": names keep the model
        # serialisable and give the registry the same cache key as a name passed directly.
        return device_name(value) if info.field_name == "device" else dtype_name(value)

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
            self.model_id = _policy_name(self.decoder)  # so traces name the real policy
        self.decoder.settle(self.call_options())  # bad options and reward names fail here, not at the first call
        _config.register_prefix(self.configurable_prefix)
        return self

    @model_validator(mode="after")
    def _set_ggro_version(self) -> Any:
        self._add_version("ggro-integrations", __version__)  # type: ignore[attr-defined]
        return self

    # -- one call -------------------------------------------------------------------

    def _options(self, stop: list[str] | None, kwargs: dict[str, Any]) -> CallOptions:
        """One call's options: its keywords (and LangChain's ``stop``) over this model's fields."""
        model = kwargs.get("model")
        if model is not None and model not in (self.model_id, self._model_name()):
            raise ConfigError(
                f"model={model!r} differs from this {type(self).__name__}'s policy {self.model_id!r}; a GGRO model "
                "is bound to one policy. Build another one with from_model_id(model_id=...)."
            )
        values = {k: v for k, v in kwargs.items() if k not in self._langchain_kwargs}
        if stop is not None:
            values["stop"] = list(stop)
        return CallOptions.parse(values, where=type(self).__name__).over(self.call_options())

    def _prepare(self, prompt: Prompt, stop: list[str] | None, kwargs: dict[str, Any]) -> PreparedCall:
        """The validated call (the decoder checks options, reward model, prompt and its length)."""
        assert self.decoder is not None
        return self.decoder.prepare(prompt, self._options(stop, kwargs))

    def _effective_config(self, stop: list[str] | None = None, **kwargs: Any) -> GGROConfig:
        """The configuration a call with these keywords runs with."""
        assert self.decoder is not None
        return self.decoder.config.replace(**self._options(stop, kwargs).config)

    def _texts(self, stream: GenerationStream, emit: SyncEmit) -> Iterator[str]:
        """The stream's committed text pieces, sending each intervention to ``emit`` as GGRO decides it."""
        items = iter(stream)
        try:
            for item in items:
                if isinstance(item, InterventionEvent):
                    emit(item)
                elif item.text:
                    yield item.text
        finally:
            items.close()  # the consumer may stop early: free the decoder's caches now

    async def _atexts(self, stream: GenerationStream, emit: AsyncEmit) -> AsyncIterator[str]:
        """``_texts`` off the event loop: decoding runs in a worker thread, which stops when the
        consumer stops reading, closes the generator or is cancelled."""
        assert self.decoder is not None
        bridge = AsyncGenerationStream(stream, device=self.decoder.device)
        try:
            async for item in bridge:
                if isinstance(item, InterventionEvent):
                    await emit(item)
                elif item.text:
                    yield item.text
        finally:
            await bridge.aclose()  # `async for` does not close it when the consumer leaves early

    def _decode(self, call: PreparedCall, emit: SyncEmit) -> GGROResult:
        assert self.decoder is not None
        stream = self.decoder.stream(call)
        for _ in self._texts(stream, emit):
            pass
        assert stream.result is not None
        return stream.result

    async def _adecode(self, call: PreparedCall, emit: AsyncEmit) -> GGROResult:
        assert self.decoder is not None
        stream = self.decoder.stream(call)
        async for _ in self._atexts(stream, emit):
            pass
        assert stream.result is not None
        return stream.result

    # -- public call methods: chain-level config, and the model run fixed up front ---------------

    def _configured(
        self, config: RunnableConfig | None, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[RunnableConfig, list[str] | None, dict[str, Any]]:
        """The call's config, and its ``stop`` and keywords with the configured GGRO options under them."""
        # ensure_config also picks up the config of an enclosing runnable (a LangGraph node that calls
        # model.invoke(messages) without passing its config).
        config = ensure_config(config)
        stop, kwargs = _config.with_configured(self.configurable_prefix, config, stop, kwargs)
        return config, stop, kwargs

    def _begin(
        self, config: RunnableConfig | None, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[RunnableConfig, list[str] | None, dict[str, Any], ModelRun]:
        config, stop, kwargs = self._configured(config, stop, kwargs)
        config, run = open_run(self, config, stop, kwargs)
        return config, stop, kwargs, run

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        config, stop, kwargs, run = self._begin(config, stop, kwargs)
        with run.active():
            return super().invoke(input, config, stop=stop, **kwargs)  # type: ignore[misc]

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        config, stop, kwargs, run = self._begin(config, stop, kwargs)
        with run.active():
            return await super().ainvoke(input, config, stop=stop, **kwargs)  # type: ignore[misc]

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[Any]:
        config, stop, kwargs, run = self._begin(config, stop, kwargs)
        yield from run.steps(super().stream(input, config, stop=stop, **kwargs))  # type: ignore[misc]

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        config, stop, kwargs, run = self._begin(config, stop, kwargs)
        async for chunk in run.asteps(super().astream(input, config, stop=stop, **kwargs)):  # type: ignore[misc]
            yield chunk

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        """The options this model reads from ``config["configurable"]`` (``chain.config_schema()`` lists them)."""
        return _config.config_specs(self)

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
        except (GGROError, AssertionError):
            return params  # tracing metadata must never fail a call; the call itself reports the error
        params["ls_temperature"] = cfg.temperature
        params["ls_max_tokens"] = cfg.max_new_tokens
        if cfg.stop:
            params["ls_stop"] = list(cfg.stop)
        return params

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` under the policy's own tokenizer (never a tokenizer from the Hub)."""
        assert self.decoder is not None
        return list(self.decoder.tokenizer.encode(text, add_special_tokens=False))


def result_metadata(result: GGROResult, model_name: str) -> dict[str, Any]:
    """What a response carries besides its text: reward, interventions (full and summarised), work done."""
    summary = result.summary()
    return {
        "model_name": model_name,
        "finish_reason": result.finish_reason,
        "reward": result.reward,
        "reward_model": result.reward_model,
        "reward_components": dict(result.reward_components),
        "strategy": result.strategy,
        # The core's one summary; "accepted" is the deprecated spelling of "interventions_accepted".
        "ggro_summary": {**summary, "accepted": summary["interventions_accepted"]},
        "ggro_interventions": [e.to_dict() for e in result.interventions],
        "ggro_stats": result.stats.to_dict(),
    }


def _construction_error(cls_name: str, exc: ValidationError) -> GGROError:
    """The package's own error behind a pydantic ``ValidationError``, else one ``ConfigError`` for all."""
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, GGROError):
            return cause
    problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or cls_name}: {e['msg']}" for e in exc.errors())
    return ConfigError(f"invalid {cls_name} option(s): {problems}.")


def _policy_name(decoder: GGRODecoder) -> str:
    """``model_id`` for a preloaded policy: "default" for the embedded default (a spec, as
    ``from_model_id`` takes it), else the backend's display name."""
    name = decoder.backend.name
    return "default" if name == DEFAULT_POLICY_ID else name
