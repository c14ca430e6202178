"""``GGROLLM``: a LangChain text-completion model (``BaseLLM``) decoded with GGRO."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult

from ..decoding import GGROResult
from ..events import InterventionEvent
from ._base import GGROFields, result_metadata
from ._runtime import RUN_KWARG, async_emitter, iterate_in_thread, sync_emitter


class GGROLLM(GGROFields, BaseLLM):
    """A local Hugging Face model as a LangChain LLM (string in, string out), decoded with GGRO.

    String prompts go through the policy's chat template when it has one (set
    ``use_chat_template=False`` for raw completion); only the new text is returned.

    Example:
        >>> llm = GGROLLM.from_model_id("default", reward_model="default", max_new_tokens=64)  # doctest: +SKIP
        >>> llm.invoke("Write a haiku about rain.", stop=["\\n\\n"])                           # doctest: +SKIP
    """

    _ls_model_type: ClassVar[str] = "llm"

    @classmethod
    def from_model_id(cls, model_id: str = "default", reward_model: Any = "default", **kwargs: Any) -> GGROLLM:
        """Load (or reuse, models are cached) ``model_id`` and ``reward_model``; ``kwargs`` are fields and knobs."""
        return cls(model_id=model_id, reward_model=reward_model, **kwargs)

    @property
    def _llm_type(self) -> str:
        return "ggro"

    def _generation(self, result: GGROResult) -> Generation:
        return Generation(text=result.text, generation_info=result_metadata(result, self._model_name()))

    @staticmethod
    def _llm_result(generations: list[Generation], model_name: str) -> LLMResult:
        stats = [(g.generation_info or {}).get("ggro_stats", {}) for g in generations]
        usage = {
            "prompt_tokens": sum(s.get("prompt_tokens", 0) for s in stats),
            "completion_tokens": sum(s.get("new_tokens", 0) for s in stats),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return LLMResult(
            generations=[[g] for g in generations], llm_output={"token_usage": usage, "model_name": model_name}
        )

    # BaseLLM hands ``_generate`` only the first prompt's run manager (its own TODO); these
    # overrides pass all of them so each prompt's interventions reach that prompt's run.

    def _generate_helper(
        self,
        prompts: list[str],
        stop: list[str] | None,
        run_managers: list[Any],
        *,
        new_arg_supported: bool,
        **kwargs: Any,
    ) -> LLMResult:
        kwargs[RUN_KWARG] = list(run_managers)
        return super()._generate_helper(prompts, stop, run_managers, new_arg_supported=new_arg_supported, **kwargs)

    async def _agenerate_helper(
        self,
        prompts: list[str],
        stop: list[str] | None,
        run_managers: list[Any],
        *,
        new_arg_supported: bool,
        **kwargs: Any,
    ) -> LLMResult:
        kwargs[RUN_KWARG] = list(run_managers)
        return await super()._agenerate_helper(
            prompts, stop, run_managers, new_arg_supported=new_arg_supported, **kwargs
        )

    @staticmethod
    def _run_for(i: int, run_manager: Any, kwargs: dict[str, Any]) -> Any:
        managers = kwargs.get(RUN_KWARG)
        if isinstance(managers, list) and i < len(managers):
            return managers[i]
        return run_manager if i == 0 else None

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        generations: list[Generation] = []
        for i, prompt in enumerate(prompts):
            run = self._run_for(i, run_manager, kwargs)
            if self.streaming:  # stream internally so on_llm_new_token fires
                merged: GenerationChunk | None = None
                for chunk in self._stream(prompt, stop, run, **kwargs):
                    merged = chunk if merged is None else merged + chunk
                assert merged is not None
                generations.append(Generation(text=merged.text, generation_info=merged.generation_info))
            else:
                generations.append(self._generation(self._run(self._plan(prompt, stop, kwargs), sync_emitter(run))))
        return self._llm_result(generations, self._model_name())

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        generations: list[Generation] = []
        for i, prompt in enumerate(prompts):
            run = self._run_for(i, run_manager, kwargs)
            if self.streaming:
                merged: GenerationChunk | None = None
                async for chunk in self._astream(prompt, stop, run, **kwargs):
                    merged = chunk if merged is None else merged + chunk
                assert merged is not None
                generations.append(Generation(text=merged.text, generation_info=merged.generation_info))
            else:
                plan = await asyncio.to_thread(self._plan, prompt, stop, kwargs)  # may load a reward model
                result = await self._arun(plan, async_emitter(run))
                generations.append(self._generation(result))
        return self._llm_result(generations, self._model_name())

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        # Unlike chat models, BaseLLM leaves on_llm_new_token to the implementation.
        plan = self._plan(prompt, stop, kwargs)
        emit = sync_emitter(run_manager)
        assert self.decoder is not None
        if not plan.streams:  # Best-of-N: one chunk at the end
            result = self._run(plan, emit)
            yield self._text_chunk(result.text, run_manager)
        else:
            stream = self.decoder.stream(plan.prompt, **plan.decoder_kwargs())
            for item in stream:
                if isinstance(item, InterventionEvent):
                    emit(item)
                elif item.text:
                    yield self._text_chunk(item.text, run_manager)
            assert stream.result is not None
            result = stream.result
        yield self._last_chunk(result)

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        plan = await asyncio.to_thread(self._plan, prompt, stop, kwargs)
        emit = async_emitter(run_manager)
        assert self.decoder is not None
        if not plan.streams:  # Best-of-N: one chunk at the end
            result = await self._arun(plan, emit)
            chunk = GenerationChunk(text=result.text)
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
        else:
            stream = self.decoder.stream(plan.prompt, **plan.decoder_kwargs())
            async for item in iterate_in_thread(stream, self._policy_device()):
                if isinstance(item, InterventionEvent):
                    await emit(item)
                elif item.text:
                    chunk = GenerationChunk(text=item.text)
                    if run_manager:
                        await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
            assert stream.result is not None
            result = stream.result
        yield self._last_chunk(result)

    @staticmethod
    def _text_chunk(text: str, run_manager: CallbackManagerForLLMRun | None) -> GenerationChunk:
        chunk = GenerationChunk(text=text)
        if run_manager:
            run_manager.on_llm_new_token(text, chunk=chunk)
        return chunk

    def _last_chunk(self, result: GGROResult) -> GenerationChunk:
        return GenerationChunk(text="", generation_info=result_metadata(result, self._model_name()))
