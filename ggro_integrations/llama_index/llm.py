"""``GGROLLM``: a LlamaIndex ``CustomLLM`` whose decoding is steered by GGRO.

A thin adapter: every call becomes one ``GGRODecoder`` stream. Text deltas
become ``CompletionResponse`` / ``ChatResponse`` chunks, intervention events
become ``GGROInterventionEvent`` s dispatched within the call's span, and the
``GGROResult`` summary lands in the final response's ``additional_kwargs``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW
from llama_index.core.instrumentation.span import active_span_id
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import Field, PrivateAttr

from ..config import config_field_names
from ..conversation import Prompt, as_conversation
from ..decoding import GenerationStream, GGRODecoder, GGROResult
from ..decoding.call import STRATEGIES
from ..errors import ConfigError
from ..events import InterventionEvent, TextDelta
from ..factory import build_decoder
from ..rewards.base import RewardModel
from ._threads import ThreadedStream
from .events import dispatch_intervention

Strategy = Literal["ggro", "greedy", "best_of_n"]

# Keywords a call may pass besides the GGROConfig fields.
_CALL_KEYS = ("reward_model", "strategy", "n")

# LlamaIndex roles the chat templates of HF models do not know.
_ROLE_ALIASES = {MessageRole.CHATBOT.value: "assistant", MessageRole.MODEL.value: "assistant"}


@dataclass
class _Call:
    """One validated call: what to decode and how."""

    prompt: Prompt
    strategy: str
    n: int | None
    reward: RewardModel | None
    overrides: dict[str, Any]


class GGROLLM(CustomLLM):
    """A LlamaIndex LLM that decodes with GGRO: reward-gradient nudges at uncertain tokens.

    Build it from names (models are loaded once per process and shared with the
    LangChain adapter) or around an existing decoder:

    Example:
        >>> llm = GGROLLM.from_model_id("default", reward_model="default", entropy_threshold=2.5)  # doctest: +SKIP
        >>> llm = GGROLLM(decoder=my_decoder)                                                    # doctest: +SKIP
        >>> llm.complete("How do I store bleach?", num_refinements=4).additional_kwargs["reward"]  # doctest: +SKIP

    Every call accepts keyword overrides of any ``GGROConfig`` field (``entropy_threshold``,
    ``num_refinements``, ``stop``, ...), ``reward_model`` (a registered name, hub id, path or
    ``RewardModel``), ``strategy`` (``"ggro"``, ``"greedy"``, ``"best_of_n"``) and ``n``.
    """

    model_name: str | None = Field(default=None, description="Name of the policy, shown in metadata and traces.")
    reward_model: str | None = Field(
        default=None,
        description="Reward model of calls that name none (registered name, hub id or path); None: the decoder's own.",
    )
    strategy: Strategy = Field(default="ggro", description="Decoding strategy of calls that name none.")
    ggro_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="GGROConfig overrides applied to every call; per-call keywords win."
    )
    device: str | None = Field(default=None, description="Device for reward models loaded by name.")
    dtype: str | None = Field(default=None, description="Dtype for reward models loaded by name.")

    _decoder: GGRODecoder = PrivateAttr()
    _default_reward: RewardModel | None = PrivateAttr(default=None)

    def __init__(self, decoder: GGRODecoder | None = None, **data: Any) -> None:
        super().__init__(**data)
        if decoder is None:
            model_id = self.model_name or "default"
            decoder = build_decoder(model_id, self.reward_model, device=self.device, dtype=self.dtype)
            self.model_name = _policy_name(model_id, decoder)
        if not isinstance(decoder, GGRODecoder):
            raise TypeError(f"decoder must be a GGRODecoder; got {type(decoder).__name__}.")
        self._decoder = decoder
        if self.model_name is None:
            self.model_name = _policy_name("", decoder)
        # Resolved once: unknown names and bad options fail here, not on the first call.
        self._default_reward = self._resolve_reward(self.reward_model)
        self._prepare(None, {})

    @classmethod
    def from_model_id(
        cls,
        model_id: Any = "default",
        reward_model: Any = "default",
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> GGROLLM:
        """A ``GGROLLM`` over ``model_id`` (``"default"``, a hub id, a path or ``(model, tokenizer)``)
        steered by ``reward_model``; other keywords are ``GGROConfig`` fields or ``GGROLLM`` fields."""
        llm_fields = {k: kwargs.pop(k) for k in list(kwargs) if k in cls.model_fields}
        decoder = build_decoder(
            model_id, reward_model, device=device, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs
        )
        if isinstance(model_id, str) and "model_name" not in llm_fields:
            llm_fields["model_name"] = _policy_name(model_id, decoder)
        # A name stays on the LLM (it resolves to the same cached model); anything else lives in the decoder.
        name = reward_model if isinstance(reward_model, str) else None
        return cls(decoder=decoder, reward_model=name, device=_as_name(device), dtype=_as_name(dtype), **llm_fields)

    @classmethod
    def class_name(cls) -> str:
        return "GGROLLM"

    @property
    def decoder(self) -> GGRODecoder:
        """The shared ``GGRODecoder`` this LLM calls."""
        return self._decoder

    def with_options(self, **kwargs: Any) -> GGROLLM:
        """A copy sharing this decoder whose calls default to ``kwargs``: the per-call keywords,
        for code paths that call the LLM without them (query and chat engines)."""
        options = dict(kwargs)
        reward = options.pop("reward_model", None)
        update: dict[str, Any] = {}
        if "strategy" in options:
            update["strategy"] = options.pop("strategy")
        if reward is not None:
            update["reward_model"] = reward if isinstance(reward, str) else None
        update["ggro_kwargs"] = {**self.ggro_kwargs, **options}
        copy = self.model_copy(update=update)  # shares the decoder (private attributes are copied shallowly)
        if reward is not None:
            copy._default_reward = copy._resolve_reward(reward)
        copy._prepare(None, {})
        return copy

    def tokenize(self, text: str) -> list[int]:
        """The policy's token ids for ``text``: set ``Settings.tokenizer = llm.tokenize`` so prompt packing counts right."""
        return self._decoder.tokenizer.encode(text, add_special_tokens=False)

    def to_payload(self) -> dict[str, Any]:
        """Metadata plus the GGRO settings of calls that name none: what traces record for this LLM."""
        reward = self._default_reward or self._decoder.reward_model
        return {
            **super().to_payload(),
            "reward_model": reward.name if reward is not None else None,
            "strategy": self.strategy,
            "ggro_options": self._decoder.config.replace(**self._config_defaults()).to_dict(),
        }

    @property
    def metadata(self) -> LLMMetadata:
        decoder = self._decoder
        config = decoder.config.replace(**self._config_defaults())
        has_template = bool(getattr(decoder.tokenizer, "chat_template", None))
        return LLMMetadata(
            context_window=decoder.context_window or DEFAULT_CONTEXT_WINDOW,
            num_output=config.max_new_tokens,
            is_chat_model=has_template and config.use_chat_template is not False,
            is_function_calling_model=False,
            model_name=self.model_name or "",
        )

    # -- completion ---------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        call = self._prepare(self._completion_prompt(prompt, formatted), kwargs)
        result = self._drain(call, active_span_id.get())
        return CompletionResponse(text=result.text, additional_kwargs=summary(result), raw=raw(result))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        call = self._prepare(self._completion_prompt(prompt, formatted), kwargs)
        # The span of this call closes when the generator is returned; events raised while
        # iterating are attributed to it explicitly, as LlamaIndex does for its own stream events.
        span_id = active_span_id.get()

        def gen() -> CompletionResponseGen:
            for text, delta, result in self._iterate(call, span_id):
                yield _completion_chunk(text, delta, result)

        return gen()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        call = await self._aprepare(self._completion_prompt(prompt, formatted), kwargs)
        result = await self._adrain(call, active_span_id.get())
        return CompletionResponse(text=result.text, additional_kwargs=summary(result), raw=raw(result))

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        call = await self._aprepare(self._completion_prompt(prompt, formatted), kwargs)
        span_id = active_span_id.get()

        async def gen() -> CompletionResponseAsyncGen:
            async for text, delta, result in self._aiterate(call, span_id):
                yield _completion_chunk(text, delta, result)

        return gen()

    # -- chat -----------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        call = self._prepare(to_conversation(messages), kwargs)
        result = self._drain(call, active_span_id.get())
        return _chat_response(result.text, None, result)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        call = self._prepare(to_conversation(messages), kwargs)
        span_id = active_span_id.get()

        def gen() -> ChatResponseGen:
            for text, delta, result in self._iterate(call, span_id):
                yield _chat_response(text, delta, result)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        call = await self._aprepare(to_conversation(messages), kwargs)
        result = await self._adrain(call, active_span_id.get())
        return _chat_response(result.text, None, result)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        call = await self._aprepare(to_conversation(messages), kwargs)
        span_id = active_span_id.get()

        async def gen() -> ChatResponseAsyncGen:
            async for text, delta, result in self._aiterate(call, span_id):
                yield _chat_response(text, delta, result)

        return gen()

    # -- one call ---------------------------------------------------------------------

    def _config_defaults(self) -> dict[str, Any]:
        return {k: v for k, v in self.ggro_kwargs.items() if k not in _CALL_KEYS}

    def _completion_prompt(self, prompt: str, formatted: bool) -> str:
        return prompt if formatted or self.completion_to_prompt is None else self.completion_to_prompt(prompt)

    def _prepare(self, prompt: Prompt | None, kwargs: Mapping[str, Any]) -> _Call:
        """Validate everything up front, so bad input raises from the call itself (streams included)."""
        options = {**self.ggro_kwargs, **kwargs}
        unknown = sorted(set(options) - set(config_field_names()) - set(_CALL_KEYS))
        if unknown:
            raise ConfigError(
                f"GGROLLM got unknown option(s) {unknown}; valid per-call options are "
                f"{', '.join(list(_CALL_KEYS) + config_field_names())}."
            )
        strategy = options.pop("strategy", None) or self.strategy
        if strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {list(STRATEGIES)}; got {strategy!r}.")
        n = options.pop("n", None)
        spec = options.pop("reward_model", None)
        # Raises ConfigError naming the bad field; ``n`` is Best-of-N's sample count.
        self._decoder.config.replace(**options, **({"best_of_n": n} if n is not None else {}))
        reward = self._resolve_reward(spec) if spec is not None else self._default_reward
        if prompt is None:
            return _Call(prompt="", strategy=strategy, n=n, reward=reward, overrides=options)  # settings check only
        if strategy != "greedy" and reward is None and self._decoder.reward_model is None:
            raise ConfigError(
                f"strategy={strategy!r} needs a reward model; pass reward_model= to this call, "
                "to GGROLLM.from_model_id, or to the GGRODecoder."
            )
        as_conversation(prompt)  # PromptError on an empty prompt or malformed messages
        return _Call(prompt=prompt, strategy=strategy, n=n, reward=reward, overrides=options)

    async def _aprepare(self, prompt: Prompt, kwargs: Mapping[str, Any]) -> _Call:
        # Off the loop: naming a reward model for the first time loads it, which can take seconds.
        return await asyncio.to_thread(self._prepare, prompt, kwargs)

    def _resolve_reward(self, spec: Any) -> RewardModel | None:
        if spec is None:
            return None  # the decoder's own
        from ..rewards.registry import load_reward_model

        device = self.device
        policy_device = self._policy_device()
        if device is None and policy_device.type != "cpu":
            device = str(policy_device)  # a reward model named per call lives next to the policy
        reward = load_reward_model(spec, device=device, dtype=self.dtype)
        if reward is not self._decoder.reward_model:
            reward.check_policy_tokenizer(self._decoder.tokenizer)
        return reward

    def _policy_device(self) -> torch.device:
        return self._decoder.model.get_input_embeddings().weight.device

    def _open(self, call: _Call) -> GenerationStream:
        decoder = self._decoder
        if call.strategy != "best_of_n":
            return decoder.stream(call.prompt, strategy=call.strategy, reward_model=call.reward, **call.overrides)

        def whole() -> Iterator[TextDelta]:
            # Best-of-N knows its answer only once every sample ends: one delta with the whole text.
            result = decoder.generate(
                call.prompt, strategy=call.strategy, n=call.n, reward_model=call.reward, **call.overrides
            )
            if result.text:
                yield TextDelta(result.text, list(result.token_ids))
            return result

        return GenerationStream(whole())  # type: ignore[arg-type]

    def _iterate(self, call: _Call, span_id: str | None) -> Iterator[tuple[str, str, GGROResult | None]]:
        """``(text so far, delta, None)`` per committed piece, then ``(text, "", result)``."""
        stream = self._open(call)
        items = iter(stream)
        text = ""
        try:
            for item in items:
                if isinstance(item, InterventionEvent):
                    dispatch_intervention(item, span_id)
                elif item.text:
                    text += item.text
                    yield text, item.text, None
        finally:
            items.close()  # the consumer may stop early: free the decoder's state now
        assert stream.result is not None
        yield stream.result.text, "", stream.result

    async def _aiterate(self, call: _Call, span_id: str | None) -> AsyncIterator[tuple[str, str, GGROResult | None]]:
        """The async twin of ``_iterate``: decoding runs in a worker thread."""
        stream = ThreadedStream(self._open(call))
        items = stream.__aiter__()
        text = ""
        try:
            async for item in items:
                if isinstance(item, InterventionEvent):
                    dispatch_intervention(item, span_id)
                elif item.text:
                    text += item.text
                    yield text, item.text, None
        finally:
            await items.aclose()  # `async for` does not close it when the consumer leaves early
        assert stream.result is not None
        yield stream.result.text, "", stream.result

    def _drain(self, call: _Call, span_id: str | None) -> GGROResult:
        result = None
        for _, _, result in self._iterate(call, span_id):
            pass
        assert result is not None
        return result

    async def _adrain(self, call: _Call, span_id: str | None) -> GGROResult:
        result = None
        async for _, _, result in self._aiterate(call, span_id):
            pass
        assert result is not None
        return result


# -- conversions -------------------------------------------------------------------------


def to_conversation(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """LlamaIndex chat messages as ``[{"role", "content"}]`` for the policy's chat template."""
    out = []
    for message in messages:
        role = message.role.value if isinstance(message.role, MessageRole) else str(message.role)
        out.append({"role": _ROLE_ALIASES.get(role, role), "content": message.content or ""})
    return out


def summary(result: GGROResult) -> dict[str, Any]:
    """What a response's ``additional_kwargs`` carry: reward, interventions, token counts."""
    return {
        "reward": result.reward,
        "reward_model": result.reward_model,
        "strategy": result.strategy,
        "finish_reason": result.finish_reason,
        "triggers": result.stats.triggers,
        "interventions_accepted": result.stats.interventions_accepted,
        "interventions": [e.to_dict() for e in result.interventions],
        "prompt_tokens": result.stats.prompt_tokens,
        "completion_tokens": result.stats.new_tokens,
        "total_tokens": result.stats.prompt_tokens + result.stats.new_tokens,
    }


def raw(result: GGROResult) -> dict[str, Any]:
    """The rest of the result (stats, config, components, samples) with a ``usage`` block
    that LlamaIndex's token counter reads."""
    data = result.to_dict()
    for key in ("text", "interventions"):
        data.pop(key)  # already on the response
    data["usage"] = {
        "prompt_tokens": result.stats.prompt_tokens,
        "completion_tokens": result.stats.new_tokens,
        "total_tokens": result.stats.prompt_tokens + result.stats.new_tokens,
    }
    return data


def _completion_chunk(text: str, delta: str, result: GGROResult | None) -> CompletionResponse:
    if result is None:
        return CompletionResponse(text=text, delta=delta)
    return CompletionResponse(text=text, delta=delta, additional_kwargs=summary(result), raw=raw(result))


def _chat_response(text: str, delta: str | None, result: GGROResult | None) -> ChatResponse:
    message = ChatMessage(role=MessageRole.ASSISTANT, content=text)
    if result is None:
        return ChatResponse(message=message, delta=delta)
    return ChatResponse(message=message, delta=delta, additional_kwargs=summary(result), raw=raw(result))


def _as_name(value: Any) -> str | None:
    """``torch.device("cuda:0")`` -> ``"cuda:0"``, ``torch.bfloat16`` -> ``"bfloat16"``: the registry
    normalises both spellings to the same cache key."""
    if value is None or isinstance(value, str):
        return value
    return str(value).removeprefix("torch.")


def _policy_name(model_id: str, decoder: GGRODecoder) -> str:
    if model_id == "default":
        from ..models import DEFAULT_POLICY_ID

        return DEFAULT_POLICY_ID
    return model_id or getattr(decoder.model.config, "_name_or_path", "") or type(decoder.model).__name__
