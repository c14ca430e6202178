"""``ChatGGRO``: a LangChain chat model whose decoding GGRO steers with a reward model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, ClassVar, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.uuid import uuid7

from ..decoding import GGROResult
from ..errors import ConfigError
from ..events import InterventionEvent
from ._base import CallPlan, GGROFields, result_metadata
from ._runtime import RUN_KWARG, StreamTarget, async_emitter, iterate_in_thread, sync_emitter
from .messages import to_chat_messages, tool_schema_names
from .tools import ParsedToolCalls, parse_tool_calls, supports_tools, tool_choice_instruction

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
        >>> ChatGGRO(decoder=my_decoder).with_config(configurable={})                                # doctest: +SKIP
    """

    _ls_model_type: ClassVar[str] = "chat"

    disable_streaming: bool | Literal["tool_calling"] = "tool_calling"
    """With tools bound, ``stream()`` returns one chunk: a tool call is only known once the output is complete."""

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
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` to the policy through its chat template; calls come back as ``AIMessage.tool_calls``.

        ``tool_choice`` ("auto", "none", "any"/"required" or a tool name) is honoured by
        instruction: a local policy cannot be forced to call a tool.
        """
        assert self.decoder is not None
        if not supports_tools(self.decoder.tokenizer):
            raise ConfigError(
                f"the chat template of policy {self.model_id!r} does not render tools, so bound tools would be "
                "silently ignored. Use a policy whose template supports tools (it references `tools`), or give "
                "this one a tool template: ChatGGRO(decoder=with_tool_template(decoder))."
            )
        formatted = [convert_to_openai_tool(t) for t in tools]
        tool_choice_instruction(tool_choice, tool_schema_names(formatted))  # validate now, not at the first call
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return super().bind(tools=formatted, **kwargs)

    def _chat_plan(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> CallPlan:
        conversation = to_chat_messages(messages)
        tools = kwargs.get("tools") or None
        tool_choice = kwargs.get("tool_choice")
        plan = self._plan(conversation, stop, kwargs, extra=("tools", "tool_choice"))
        if tools:
            assert self.decoder is not None
            if not supports_tools(self.decoder.tokenizer):
                raise ConfigError(f"tools were passed but policy {self.model_id!r}'s chat template cannot render them.")
            tools = [convert_to_openai_tool(t) for t in tools]
            if tool_choice == "none":
                tools = None
            else:
                instruction = tool_choice_instruction(tool_choice, tool_schema_names(tools))
                if instruction:
                    conversation = _with_instruction(conversation, instruction)
        plan.prompt, plan.tools = conversation, tools
        return plan

    # -- results ----------------------------------------------------------------------------

    def _parse(self, result: GGROResult, plan: CallPlan) -> ParsedToolCalls:
        if not plan.tools:
            return ParsedToolCalls(result.text)
        return parse_tool_calls(result.text, tool_schema_names(plan.tools))

    def _message_fields(self, result: GGROResult, plan: CallPlan) -> dict[str, Any]:
        parsed = self._parse(result, plan)
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

    def _chat_result(self, result: GGROResult, plan: CallPlan) -> ChatResult:
        fields = self._message_fields(result, plan)
        message = AIMessage(**fields)
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=fields["response_metadata"])])

    def _final_chunk(self, result: GGROResult, plan: CallPlan, streamed_text: bool) -> ChatGenerationChunk:
        fields = self._message_fields(result, plan)
        content = "" if streamed_text else fields["content"]
        chunks = [
            {"name": c["name"], "args": _json(c["args"]), "id": c["id"], "index": i, "type": "tool_call_chunk"}
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

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        run = run_manager or kwargs.get(RUN_KWARG)
        plan = self._chat_plan(messages, stop, kwargs)
        return self._chat_result(self._run(plan, sync_emitter(run)), plan)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        run = run_manager or kwargs.get(RUN_KWARG)
        plan = await asyncio.to_thread(self._chat_plan, messages, stop, kwargs)  # may load a reward model
        return self._chat_result(await self._arun(plan, async_emitter(run)), plan)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # LangChain calls on_llm_new_token for chat chunks itself; we only emit interventions.
        plan = self._chat_plan(messages, stop, kwargs)
        emit = sync_emitter(run_manager or kwargs.get(RUN_KWARG))
        assert self.decoder is not None
        if not plan.streams or plan.tools:
            # Best-of-N has nothing to stream early; a tool call is known only once complete.
            yield self._final_chunk(self._run(plan, emit), plan, streamed_text=False)
            return
        stream = self.decoder.stream(plan.prompt, **plan.decoder_kwargs())
        for item in stream:
            if isinstance(item, InterventionEvent):
                emit(item)
            elif item.text:
                yield ChatGenerationChunk(message=AIMessageChunk(content=item.text))
        assert stream.result is not None
        yield self._final_chunk(stream.result, plan, streamed_text=True)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        plan = await asyncio.to_thread(self._chat_plan, messages, stop, kwargs)  # may load a reward model
        emit = async_emitter(run_manager or kwargs.get(RUN_KWARG))
        assert self.decoder is not None
        if not plan.streams or plan.tools:
            yield self._final_chunk(await self._arun(plan, emit), plan, streamed_text=False)
            return
        stream = self.decoder.stream(plan.prompt, **plan.decoder_kwargs())
        async for item in iterate_in_thread(stream, self._policy_device()):
            if isinstance(item, InterventionEvent):
                await emit(item)
            elif item.text:
                yield ChatGenerationChunk(message=AIMessageChunk(content=item.text))
        assert stream.result is not None
        yield self._final_chunk(stream.result, plan, streamed_text=True)

    # LangChain hands ``_stream`` no run manager (in stream(), astream() and when invoke streams
    # internally, e.g. under astream_events). These overrides give it the model run so the
    # interventions still reach that run's callbacks, as ``_generate`` does with its run manager.

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        config, target = self._with_run_id(config)
        yield from super().stream(input, config, stop=stop, **{RUN_KWARG: target, **kwargs})

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        config, target = self._with_run_id(config)
        async for chunk in super().astream(input, config, stop=stop, **{RUN_KWARG: target, **kwargs}):
            yield chunk

    def _with_run_id(self, config: RunnableConfig | None) -> tuple[RunnableConfig, StreamTarget]:
        config = ensure_config(config)
        run_id = config.get("run_id") or uuid7()
        config = {**config, "run_id": run_id}  # LangChain opens the model run with this id
        return config, StreamTarget(run_id, dict(config), self)

    def _generate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if run_manager is not None:
            kwargs[RUN_KWARG] = run_manager
        return super()._generate_with_cache(messages, stop=stop, run_manager=run_manager, **kwargs)

    async def _agenerate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if run_manager is not None:
            kwargs[RUN_KWARG] = run_manager
        return await super()._agenerate_with_cache(messages, stop=stop, run_manager=run_manager, **kwargs)

    def _get_invocation_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        return super()._get_invocation_params(stop=stop, **self._clean_invocation_kwargs(kwargs))

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None) -> int:
        """Prompt tokens of ``messages`` as the policy sees them: chat template and tools included."""
        assert self.decoder is not None
        conversation = to_chat_messages(messages)
        tokenizer = self.decoder.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            return super().get_num_tokens_from_messages(messages)
        kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
        if tools:
            kwargs["tools"] = [convert_to_openai_tool(t) for t in tools]
        text = tokenizer.apply_chat_template(conversation, **kwargs)
        return len(tokenizer.encode(text, add_special_tokens=False))


def _with_instruction(conversation: list[dict[str, Any]], instruction: str) -> list[dict[str, Any]]:
    if conversation and conversation[0]["role"] == "system":
        first = dict(conversation[0], content=f"{conversation[0]['content']}\n\n{instruction}")
        return [first, *conversation[1:]]
    return [{"role": "system", "content": instruction}, *conversation]


def _json(value: Any) -> str:
    import json

    return json.dumps(value)
