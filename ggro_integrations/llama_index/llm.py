"""``GGROLLM``: a LlamaIndex ``CustomLLM`` whose decoding is steered by GGRO.

A thin adapter: every call is one ``GGRODecoder.prepare`` (all validation
happens there) and one decoder stream. Text deltas become
``CompletionResponse`` / ``ChatResponse`` chunks, intervention events become
``GGROInterventionEvent`` s dispatched within the call's span, and the
``GGROResult`` summary lands in the final response's ``additional_kwargs``.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

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
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW
from llama_index.core.instrumentation.span import active_span_id
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.llms.function_calling import FunctionCallingLLM
from pydantic import Field, PrivateAttr, model_validator

from ..conversation import Prompt
from ..decoding import GGRODecoder, GGROResult, PreparedCall
from ..decoding.call import CallSettings
from ..decoding.threads import AsyncGenerationStream
from ..events import InterventionEvent
from ..factory import build_decoder
from ..loading import device_name, dtype_name
from ..options import KNOBS, GGROOptionFields
from ..tools import parse_tool_calls, supports_tools
from .events import dispatch_intervention
from .tool_calls import ToolCallHoldback, tool_selections, to_conversation


class GGROLLM(GGROOptionFields, FunctionCallingLLM, CustomLLM):
    """A LlamaIndex LLM that decodes with GGRO: reward-gradient nudges at uncertain tokens.

    It is a ``FunctionCallingLLM``: ``chat_with_tools`` / ``predict_and_call``,
    ``FunctionAgent``, ``structured_predict`` and ``as_structured_llm`` work, and a
    tool call is grammar-constrained (its name one of the tools, its arguments
    valid under the tool's schema) while GGRO steers the free text around it.

    Build it from names (models are loaded once per process and shared with the
    LangChain adapter) or around an existing decoder:

    Example:
        >>> llm = GGROLLM.from_model_id("default", reward_model="default", entropy_threshold=2.5)  # doctest: +SKIP
        >>> llm = GGROLLM(decoder=my_decoder, num_refinements=4)                                  # doctest: +SKIP
        >>> llm.complete("How do I store bleach?", strategy="greedy").additional_kwargs["reward"]  # doctest: +SKIP

    The GGRO options (``entropy_threshold``, ``num_refinements``, ``stop``, ...,
    ``reward_model``, ``strategy``) are fields, the same names as ``ChatGGRO``'s;
    every call also accepts them as keywords, which win for that call.
    """

    model_name: str | None = Field(default=None, description="Name of the policy, shown in metadata and traces.")
    device: str | None = Field(default=None, description="Device for reward models loaded by name.")
    dtype: str | None = Field(default=None, description="Dtype for reward models loaded by name.")

    _decoder: GGRODecoder = PrivateAttr()

    def __init__(self, decoder: GGRODecoder | None = None, **data: Any) -> None:
        super().__init__(**data)
        if decoder is None:
            model_id = self.model_name or "default"
            decoder = build_decoder(model_id, None, device=self.device, dtype=self.dtype)
            self.model_name = _policy_name(model_id, decoder)
        if not isinstance(decoder, GGRODecoder):
            raise TypeError(f"decoder must be a GGRODecoder; got {type(decoder).__name__}.")
        self._decoder = decoder
        if self.model_name is None:
            self.model_name = _policy_name("", decoder)
        # Unknown reward names and bad options fail here, not on the first call.
        self._settle()

    @model_validator(mode="before")
    @classmethod
    def _ggro_kwargs_are_fields_now(cls, values: Any) -> Any:
        if isinstance(values, dict) and "ggro_kwargs" in values:
            warnings.warn(
                "GGROLLM(ggro_kwargs={...}) is deprecated: pass the options as fields, GGROLLM(entropy_threshold=...).",
                DeprecationWarning,
                stacklevel=4,
            )
            values = dict(values)
            options = dict(values.pop("ggro_kwargs") or {})
            if "n" in options:
                options["best_of_n"] = options.pop("n")
            values = {**options, **values}
        return values

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
        steered by ``reward_model``; GGRO options configure the decoder, other keywords are ``GGROLLM`` fields."""
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in KNOBS or k == "max_tokens"}
        decoder = build_decoder(
            model_id, reward_model, device=device, dtype=dtype, trust_remote_code=trust_remote_code, **options
        )
        if isinstance(model_id, str) and "model_name" not in kwargs:
            kwargs["model_name"] = _policy_name(model_id, decoder)
        # A name stays on the LLM (it resolves to the same cached model); anything else lives in the decoder.
        name = reward_model if isinstance(reward_model, str) else None
        return cls(decoder=decoder, reward_model=name, device=device_name(device), dtype=dtype_name(dtype), **kwargs)

    @classmethod
    def from_server(
        cls,
        url: str,
        model: Any = "default",
        reward_model: Any = "default",
        *,
        engine: str = "llama.cpp",
        server_options: dict[str, Any] | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        **kwargs: Any,
    ) -> GGROLLM:
        """The policy served at ``url`` (llama-server, vLLM or SGLang: ``engine``), the reward model here.

        ``model`` names the served model's tokenizer, loaded locally (``"default"``: the embedded
        default's); ``server_options`` go to ``ServerBackend``; other keywords as for ``from_model_id``.
        Concurrent ``acomplete`` / ``achat`` calls become concurrent requests the engine batches.
        """
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in KNOBS or k == "max_tokens"}
        decoder = build_decoder(model, reward_model, device=device, dtype=dtype, server=url, engine=engine,
                                server_options=server_options, **options)
        if isinstance(model, str) and "model_name" not in kwargs:
            kwargs["model_name"] = _policy_name(model, decoder)
        name = reward_model if isinstance(reward_model, str) else None
        return cls(decoder=decoder, reward_model=name, device=device_name(device), dtype=dtype_name(dtype), **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "GGROLLM"

    @property
    def decoder(self) -> GGRODecoder:
        """The shared ``GGRODecoder`` this LLM calls."""
        return self._decoder

    @property
    def ggro_kwargs(self) -> dict[str, Any]:
        """Deprecated: the GGRO options set on this LLM (they are fields now)."""
        return {k: v for k, v in self.option_values().items() if k in KNOBS}

    def with_options(self, **kwargs: Any) -> GGROLLM:
        """A copy sharing this decoder whose calls default to ``kwargs``: the per-call keywords,
        for code paths that call the LLM without them (query and chat engines)."""
        values = {("max_new_tokens" if k == "max_tokens" else k): v for k, v in kwargs.items()}
        unknown = sorted(set(values) - set(KNOBS) - {"strategy", "reward_model"})
        if unknown:
            from ..decoding.call import unknown_option_error

            raise unknown_option_error(unknown, "GGROLLM.with_options")
        copy = self.model_copy(update=values)  # shares the decoder (private attributes are copied shallowly)
        copy._settle()
        return copy

    def tokenize(self, text: str) -> list[int]:
        """The policy's token ids for ``text``: set ``Settings.tokenizer = llm.tokenize`` so prompt packing counts right."""
        return self._decoder.tokenizer.encode(text, add_special_tokens=False)

    def to_payload(self) -> dict[str, Any]:
        """Metadata plus the GGRO settings of calls that name none: what traces record for this LLM."""
        settings = self._settle()
        return {
            **super().to_payload(),
            "reward_model": settings.reward.name if settings.reward is not None else None,
            "strategy": settings.strategy,
            "ggro_options": settings.config.to_dict(),
        }

    @property
    def metadata(self) -> LLMMetadata:
        decoder = self._decoder
        config = self._settle().config
        has_template = bool(getattr(decoder.tokenizer, "chat_template", None))
        return LLMMetadata(
            context_window=decoder.context_window or DEFAULT_CONTEXT_WINDOW,
            num_output=config.max_new_tokens,
            is_chat_model=has_template and config.use_chat_template is not False,
            is_function_calling_model=supports_tools(decoder.tokenizer),
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
        return (_completion_chunk(*piece) for piece in self._iterate(call, span_id))

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        call = await self._aprepare(self._completion_prompt(prompt, formatted), kwargs)
        result = await self._adrain(call, active_span_id.get())
        return CompletionResponse(text=result.text, additional_kwargs=summary(result), raw=raw(result))

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        call = await self._aprepare(self._completion_prompt(prompt, formatted), kwargs)
        return _amap(_completion_chunk, self._aiterate(call, active_span_id.get()))

    # -- chat -----------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        call = self._prepare(to_conversation(messages), kwargs)
        result = self._drain(call, active_span_id.get())
        return _chat_response(result.text, None, result, call)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        call = self._prepare(to_conversation(messages), kwargs)
        span_id = active_span_id.get()
        return (_chat_response(*piece, call) for piece in _visible(self._iterate(call, span_id), call))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        call = await self._aprepare(to_conversation(messages), kwargs)
        result = await self._adrain(call, active_span_id.get())
        return _chat_response(result.text, None, result, call)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        call = await self._aprepare(to_conversation(messages), kwargs)
        pieces = _avisible(self._aiterate(call, active_span_id.get()), call)
        return _amap(lambda *piece: _chat_response(*piece, call), pieces)

    # -- function calling ---------------------------------------------------------------

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """``chat`` arguments for ``chat_with_tools``: the tools as OpenAI schemas, the choice constrained."""
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg) if isinstance(user_msg, str) else user_msg)
        if tool_choice is None:
            tool_choice = "required" if tool_required else "auto"
        return {
            "messages": messages,
            "tools": [tool.metadata.to_openai_tool() for tool in tools],
            "tool_choice": tool_choice,
            "parallel_tool_calls": allow_parallel_tool_calls,
            **kwargs,
        }

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[Any]:
        """The tool calls of a ``chat_with_tools`` response (its ``ToolCallBlock`` s) as ``ToolSelection`` s."""
        selections = tool_selections(response.message)
        if not selections and error_on_no_tool_call:
            raise ValueError(
                f"expected at least one tool call in the response, got none: {response.message.content or ''!r}. "
                "Pass tool_required=True (or tool_choice='required') to make the call certain."
            )
        return selections

    # -- one call ---------------------------------------------------------------------

    def _completion_prompt(self, prompt: str, formatted: bool) -> str:
        return prompt if formatted or self.completion_to_prompt is None else self.completion_to_prompt(prompt)

    def _settle(self) -> CallSettings:
        """This LLM's options resolved against the decoder (bad options and reward names raise here)."""
        return self._decoder.settle(self.call_options())

    def _prepare(self, prompt: Prompt, kwargs: Mapping[str, Any]) -> PreparedCall:
        """Validate everything up front (in the decoder), so bad input raises from the call itself."""
        return self._decoder.prepare(prompt, self.call_options(), **kwargs)

    async def _aprepare(self, prompt: Prompt, kwargs: Mapping[str, Any]) -> PreparedCall:
        # Off the loop: naming a reward model for the first time loads it, which can take seconds.
        return await asyncio.to_thread(self._prepare, prompt, kwargs)

    def _resolve_reward(self, spec: Any) -> Any:
        return self._decoder.resolve_reward_model(spec)

    def _iterate(self, call: PreparedCall, span_id: str | None) -> Iterator[tuple[str, str | None, GGROResult | None]]:
        """``(text so far, delta, None)`` per committed piece, then ``(text, "", result)``."""
        stream = self._decoder.stream(call)
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

    async def _aiterate(
        self, call: PreparedCall, span_id: str | None
    ) -> AsyncIterator[tuple[str, str | None, GGROResult | None]]:
        """The async twin of ``_iterate``: decoding runs in a worker thread (``AsyncGenerationStream``)."""
        stream = AsyncGenerationStream(self._decoder.stream(call), device=self._decoder.device)
        text = ""
        try:
            async for item in stream:
                if isinstance(item, InterventionEvent):
                    dispatch_intervention(item, span_id)
                elif item.text:
                    text += item.text
                    yield text, item.text, None
        finally:
            await stream.aclose()  # `async for` does not close it when the consumer leaves early
        assert stream.result is not None
        yield stream.result.text, "", stream.result

    def _drain(self, call: PreparedCall, span_id: str | None) -> GGROResult:
        result = None
        for _, _, result in self._iterate(call, span_id):
            pass
        assert result is not None
        return result

    async def _adrain(self, call: PreparedCall, span_id: str | None) -> GGROResult:
        result = None
        async for _, _, result in self._aiterate(call, span_id):
            pass
        assert result is not None
        return result


# -- conversions -------------------------------------------------------------------------


def summary(result: GGROResult) -> dict[str, Any]:
    """What a response's ``additional_kwargs`` carry: the core summary plus every intervention."""
    return {**result.summary(), "interventions": [e.to_dict() for e in result.interventions]}


def raw(result: GGROResult) -> dict[str, Any]:
    """The rest of the result (stats, config, components, samples) with a ``usage`` block
    that LlamaIndex's token counter reads."""
    data = result.to_dict()
    for key in ("text", "interventions"):
        data.pop(key)  # already on the response
    headline = result.summary()
    data["usage"] = {k: headline[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return data


async def _amap(fn: Any, pieces: AsyncIterator[tuple[str, str | None, GGROResult | None]]) -> AsyncIterator[Any]:
    async for piece in pieces:
        yield fn(*piece)


def _completion_chunk(text: str, delta: str | None, result: GGROResult | None) -> CompletionResponse:
    if result is None:
        return CompletionResponse(text=text, delta=delta)
    return CompletionResponse(text=text, delta=delta, additional_kwargs=summary(result), raw=raw(result))


def _chat_response(text: str, delta: str | None, result: GGROResult | None, call: PreparedCall) -> ChatResponse:
    if result is None:
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)
    message = ChatMessage(role=MessageRole.ASSISTANT, content=text)
    if call.tools:
        # Tool calls become ToolCallBlocks (what FunctionAgent reads); the text keeps what is not markup.
        names = [t["function"]["name"] for t in call.tools if isinstance(t.get("function"), dict)]
        parsed = parse_tool_calls(result.text, names)
        blocks: list[Any] = [TextBlock(text=parsed.content)] if parsed.content else []
        blocks += [ToolCallBlock(tool_call_id=c["id"], tool_name=c["name"], tool_kwargs=c["args"]) for c in parsed.tool_calls]
        message = ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks)
    return ChatResponse(message=message, delta=delta, additional_kwargs=summary(result), raw=raw(result))


def _visible(pieces: Iterator[tuple[str, str | None, GGROResult | None]], call: PreparedCall) -> Iterator[Any]:
    """With tools, stream only the text before a tool call opens (the call arrives whole, as blocks)."""
    if not call.tools:
        yield from pieces
        return
    holdback = ToolCallHoldback()
    for text, delta, result in pieces:
        shown, new = holdback.update(text, final=result is not None)
        if new or result is not None:
            yield shown, new, result


async def _avisible(pieces: AsyncIterator[tuple[str, str | None, GGROResult | None]], call: PreparedCall) -> AsyncIterator[Any]:
    holdback = ToolCallHoldback() if call.tools else None
    async for text, delta, result in pieces:
        if holdback is None:
            yield text, delta, result
            continue
        shown, new = holdback.update(text, final=result is not None)
        if new or result is not None:
            yield shown, new, result


def _policy_name(model_id: str, decoder: GGRODecoder) -> str:
    """The name traces show: the given id, or the backend's display name (the embedded default: its Hub id)."""
    return model_id if model_id not in ("", "default") else decoder.backend.name
