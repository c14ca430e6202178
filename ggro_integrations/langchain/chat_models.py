"""``ChatGGRO``: a LangChain chat model whose decoding GGRO steers with a reward model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, ClassVar, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput, ModelProfile
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, model_validator

from ..decoding import CallOptions, GGROResult, PreparedCall
from ..errors import ConfigError
from ..tools import ParsedToolCalls, ToolCallHoldback, parse_tool_calls, supports_tools
from ._base import GGROFields, result_metadata
from ._runs import async_emitter, sync_emitter
from .messages import to_chat_messages, tool_schema_names
from .structured import structured_output

ToolLike = dict[str, Any] | type | Callable[..., Any] | BaseTool


class ChatGGRO(GGROFields, BaseChatModel):
    """A local Hugging Face chat model decoded with GGRO (Gradient-Guided Reward Optimization).

    Messages go through the policy's chat template; at uncertain tokens GGRO tries
    nudges from the policy's own top-K and keeps the segment the reward model
    prefers. Each intervention is sent as the custom event ``ggro_intervention``
    and listed in ``response_metadata["ggro_interventions"]``.

    Example:
        >>> chat = ChatGGRO.from_model_id("default", reward_model="default", entropy_threshold=2.5)  # doctest: +SKIP
        >>> chat.invoke("How do I pick a lock?").response_metadata["ggro_summary"]                   # doctest: +SKIP
        >>> chain.invoke(inputs, config={"configurable": {"entropy_threshold": 3.0}})                # doctest: +SKIP
    """

    _ls_model_type: ClassVar[str] = "chat"
    _langchain_kwargs: ClassVar[tuple[str, ...]] = (*GGROFields._langchain_kwargs, "ls_structured_output_format")

    disable_streaming: bool | Literal["tool_calling"] = False
    """With tools bound, ``stream()`` streams the text before a tool call; each call arrives whole, as a tool call chunk."""

    @classmethod
    def from_model_id(cls, model_id: str = "default", reward_model: Any = "default", **kwargs: Any) -> ChatGGRO:
        """Load (or reuse, models are cached) ``model_id`` and ``reward_model``; ``kwargs`` are fields and knobs."""
        return cls(model_id=model_id, reward_model=reward_model, **kwargs)

    @property
    def _llm_type(self) -> str:
        return "ggro-chat"

    # -- tools --------------------------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[ToolLike],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` to the policy; its calls come back as ``AIMessage.tool_calls``, grammar-constrained.

        ``tool_choice``: ``"auto"`` (default: the model answers in text or opens a call; once it
        opens one, the call's name and arguments follow the tools' schemas), ``"any"`` /
        ``"required"`` / ``True`` (a call is forced), a tool name or ``{"type": "function",
        "function": {"name": ...}}`` (a call to that tool is forced), ``"none"`` / ``False`` (no
        call). ``parallel_tool_calls=True`` allows several calls in one response (default off:
        small models repeat their call). Every tool schema is compiled here: a schema the grammar
        cannot enforce raises ``UnsupportedSchemaError`` naming the keyword, now, not at the first call.
        """
        self._check_tool_support(
            f"the chat template of policy {self.model_id!r} does not render tools, so bound tools would be "
            "silently ignored"
        )
        formatted: list[dict[str, Any]] = []
        for t in tools:  # a tool given twice (a pydantic class and its schema) is offered once
            schema = convert_to_openai_tool(t)
            if _untitled(schema) not in [_untitled(f) for f in formatted]:
                formatted.append(schema)
        bound: dict[str, Any] = {"tools": formatted}
        if tool_choice is not None:
            bound["tool_choice"] = tool_choice
        if parallel_tool_calls is not None:
            bound["parallel_tool_calls"] = parallel_tool_calls
        self._settle({**kwargs, **bound})  # compiles the tool-call grammar: bad schemas and choices fail here
        return super().bind(**bound, **kwargs)

    def with_structured_output(  # type: ignore[override]
        self,
        schema: dict[str, Any] | type,
        *,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """A runnable returning ``schema`` instances (pydantic) or dicts (TypedDict, JSON schema), always schema-valid.

        ``method``: ``"json_schema"`` (default: the response is exactly one JSON value valid under
        the schema, enforced token by token), ``"function_calling"`` (a call to a tool whose
        parameters are the schema, forced and constrained the same way) or ``"json_mode"`` (any
        JSON object; say in the prompt which keys you want). ``include_raw=True`` returns
        ``{"raw", "parsed", "parsing_error"}``. An unsupported schema keyword raises
        ``UnsupportedSchemaError`` naming it, here. ``strict`` is accepted for compatibility: the
        output is always constrained (objects that declare properties are closed).
        """
        if kwargs:
            raise ConfigError(
                f"with_structured_output got unsupported argument(s) {sorted(kwargs)}; it takes schema, method, "
                "include_raw and strict."
            )
        del strict  # always strict: the grammar enforces the schema
        return structured_output(self, schema, method=method, include_raw=include_raw)

    def _settle(self, kwargs: dict[str, Any]) -> None:
        """Validate (and compile) a binding's options against the decoder, before any call."""
        assert self.decoder is not None
        self.decoder.settle(self._options(None, kwargs))

    def _check_tool_support(self, problem: str) -> None:
        assert self.decoder is not None
        if not supports_tools(self.decoder.tokenizer):
            raise ConfigError(
                f"{problem}. Use a policy whose template supports tools (it references `tools`; the embedded "
                '"default" has one), or give this one a tool template: ChatGGRO(decoder=with_tool_template(decoder)).'
            )

    @model_validator(mode="after")
    def _profile_once_the_decoder_exists(self) -> ChatGGRO:
        # BaseChatModel resolves the profile before GGROFields builds the decoder from model_id (its
        # validators run first); resolve it again once the policy is known.
        if self.profile is None:
            self.profile = self._resolve_model_profile()
        return self

    def _resolve_model_profile(self) -> ModelProfile | None:
        """What agent builders read up front (langchain-core's profile hook): tools only when the template renders them."""
        assert self.decoder is not None
        grammar = self.decoder.backend.supports_constraints  # not on a server backend (yet)
        tools = grammar and supports_tools(self.decoder.tokenizer)
        profile = ModelProfile(
            open_weights=True,
            text_inputs=True,
            image_inputs=False,
            tool_calling=tools,
            tool_choice=tools,  # forced by the grammar
            structured_output=grammar,  # a JSON-schema grammar: works without a tool template
        )
        if self.decoder.context_window is not None:
            profile["max_input_tokens"] = self.decoder.context_window
        return profile

    def _prepare_chat(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> PreparedCall:
        """The validated call for ``messages``: bound tools rendered, their calls constrained by the core."""
        conversation = to_chat_messages(messages)
        tools = [convert_to_openai_tool(t) for t in kwargs.get("tools") or ()]
        if tools:
            self._check_tool_support(
                f"tools were passed but policy {self.model_id!r}'s chat template cannot render them"
            )
        return self._prepare(conversation, stop, {**kwargs, "tools": tools or None})

    # -- results ----------------------------------------------------------------------------

    def _parse(self, result: GGROResult, call: PreparedCall) -> ParsedToolCalls:
        if not call.tools:
            return ParsedToolCalls(result.text)
        return parse_tool_calls(result.text, tool_schema_names(call.tools))

    def _message_fields(self, result: GGROResult, call: PreparedCall) -> dict[str, Any]:
        parsed = self._parse(result, call)
        stats = result.stats
        usage = UsageMetadata(
            input_tokens=stats.prompt_tokens,
            output_tokens=stats.new_tokens,
            total_tokens=stats.prompt_tokens + stats.new_tokens,
        )
        return {
            "content": parsed.content,
            "usage_metadata": usage,
            "response_metadata": result_metadata(result, self._model_name()),
            "tool_calls": parsed.tool_calls,
            "invalid_tool_calls": parsed.invalid_tool_calls,
        }

    def _chat_result(self, result: GGROResult, call: PreparedCall) -> ChatResult:
        fields = self._message_fields(result, call)
        message = AIMessage(**fields)
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=fields["response_metadata"])])

    def _final_chunk(self, result: GGROResult, call: PreparedCall, streamed: str) -> ChatGenerationChunk:
        """The last chunk: what of the content was not streamed yet, usage, and each tool call whole."""
        fields = self._message_fields(result, call)
        content = fields["content"]
        content = content[len(streamed) :] if content.startswith(streamed) else ""
        chunks = [
            {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i, "type": "tool_call_chunk"}
            for i, c in enumerate(fields["tool_calls"])
        ]
        message = AIMessageChunk(
            content=content,
            usage_metadata=fields["usage_metadata"],
            tool_call_chunks=chunks,
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message, generation_info=fields["response_metadata"])

    # -- LangChain hooks ----------------------------------------------------------------------
    # The run manager is the model run's when LangChain passes one; else (stream, astream, invoke
    # streaming internally) the emitter finds the run the public call methods opened (_runs.py).

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._prepare_chat(messages, stop, kwargs)
        return self._chat_result(self._decode(call, sync_emitter(self, run_manager)), call)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = await asyncio.to_thread(self._prepare_chat, messages, stop, kwargs)  # may load a reward model
        return self._chat_result(await self._adecode(call, async_emitter(self, run_manager)), call)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # LangChain calls on_llm_new_token for chat chunks itself; we only emit interventions.
        call = self._prepare_chat(messages, stop, kwargs)
        emit = sync_emitter(self, run_manager)
        assert self.decoder is not None
        stream = self.decoder.stream(call)
        visible = _Visible(bool(call.tools))
        for text in self._texts(stream, emit):
            if piece := visible.add(text):
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        assert stream.result is not None
        yield self._final_chunk(stream.result, call, streamed=visible.shown)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = await asyncio.to_thread(self._prepare_chat, messages, stop, kwargs)  # may load a reward model
        emit = async_emitter(self, run_manager)
        assert self.decoder is not None
        stream = self.decoder.stream(call)
        visible = _Visible(bool(call.tools))
        async for text in self._atexts(stream, emit):
            if piece := visible.add(text):
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        assert stream.result is not None
        yield self._final_chunk(stream.result, call, streamed=visible.shown)

    # stream_events/astream_events(version="v3") open the model run themselves (and pass its run
    # manager to _stream) without going through invoke/stream: read the chain-level config here.

    def stream_events(  # type: ignore[override]
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        version: Literal["v1", "v2", "v3"] = "v2",
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        if version == "v3":
            config, stop, kwargs = self._configured(config, stop, kwargs)
        return super().stream_events(input, config, version=version, stop=stop, **kwargs)

    def astream_events(  # type: ignore[override]
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        version: Literal["v1", "v2", "v3"] = "v2",
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        if version == "v3":
            config, stop, kwargs = self._configured(config, stop, kwargs)
        return super().astream_events(input, config, version=version, stop=stop, **kwargs)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None) -> int:
        """Prompt tokens of ``messages`` exactly as the decoder would encode them (chat template, tools)."""
        assert self.decoder is not None
        # The decoder's own encoding, so counts follow it; without the context-window check, because
        # counting is how callers (trim_messages) find out a prompt is too long.
        schemas = [convert_to_openai_tool(t) for t in tools or ()] or None
        options = CallOptions(tools=tuple(schemas) if schemas else None).over(self.call_options())
        return len(self.decoder.prompt_ids(to_chat_messages(messages), options))


def _untitled(schema: Any) -> Any:
    """``schema`` without ``title`` annotations (pydantic adds them to a model's schema, not to the model's tool)."""
    if isinstance(schema, dict):
        return {k: _untitled(v) for k, v in schema.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(schema, list):
        return [_untitled(v) for v in schema]
    return schema


class _Visible:
    """The streamed text: everything, or with tools bound only the text before a tool call opens."""

    def __init__(self, tools: bool) -> None:
        self.holdback = ToolCallHoldback() if tools else None
        self.text = ""
        self.shown = ""

    def add(self, piece: str) -> str:
        self.text += piece
        if self.holdback is None:
            self.shown = self.text
            return piece
        self.shown, new = self.holdback.update(self.text, final=False)
        return new
