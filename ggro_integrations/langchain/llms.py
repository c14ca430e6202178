"""``GGROLLM``: a LangChain text-completion model (``BaseLLM``) decoded with GGRO."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM, LanguageModelInput
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from langchain_core.runnables import RunnableConfig, ensure_config
from langchain_core.runnables.config import get_config_list

from ..decoding import GGROResult
from . import _config
from ._base import GGROFields, result_metadata
from ._runs import async_emitter, prompt_run, prompt_runs, sync_emitter


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

    # -- LangChain hooks ------------------------------------------------------------------------
    # BaseLLM passes _generate only the first prompt's run manager (its own TODO); these overrides
    # publish all of them, so each prompt's interventions reach that prompt's run. The only private
    # langchain-core methods the adapter overrides: tests/langchain/test_lc_core_contract.py pins them.

    def _generate_helper(
        self,
        prompts: list[str],
        stop: list[str] | None,
        run_managers: list[Any],
        *,
        new_arg_supported: bool,
        **kwargs: Any,
    ) -> LLMResult:
        with prompt_runs(run_managers):
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
        with prompt_runs(run_managers):
            return await super()._agenerate_helper(
                prompts, stop, run_managers, new_arg_supported=new_arg_supported, **kwargs
            )

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        generations: list[Generation] = []
        for i, prompt in enumerate(prompts):
            run = prompt_run(i, run_manager)
            if self.streaming:  # stream internally so on_llm_new_token fires
                generations.append(_merged(list(self._stream(prompt, stop, run, **kwargs))))
            else:
                call = self._prepare(prompt, stop, kwargs)
                generations.append(self._generation(self._decode(call, sync_emitter(self, run))))
        return self._llm_result(generations, self._model_name())

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        async def one(i: int, prompt: str) -> Generation:
            run = prompt_run(i, run_manager)
            if self.streaming:
                return _merged([c async for c in self._astream(prompt, stop, run, **kwargs)])
            call = await asyncio.to_thread(self._prepare, prompt, stop, kwargs)  # may load a reward model
            return self._generation(await self._adecode(call, async_emitter(self, run)))

        assert self.decoder is not None
        if self.decoder.backend.concurrent_sessions:
            # a serving engine batches concurrent requests: decode the prompts at once
            generations = list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))
        else:  # one model in this process: one prompt after another, as before
            generations = [await one(i, p) for i, p in enumerate(prompts)]
        return self._llm_result(generations, self._model_name())

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        # Unlike chat models, BaseLLM leaves on_llm_new_token to the implementation.
        call = self._prepare(prompt, stop, kwargs)
        assert self.decoder is not None
        stream = self.decoder.stream(call)
        for text in self._texts(stream, sync_emitter(self, run_manager)):
            chunk = GenerationChunk(text=text)
            if run_manager:
                run_manager.on_llm_new_token(text, chunk=chunk)
            yield chunk
        assert stream.result is not None
        yield self._last_chunk(stream.result)

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        call = await asyncio.to_thread(self._prepare, prompt, stop, kwargs)  # may load a reward model
        assert self.decoder is not None
        stream = self.decoder.stream(call)
        async for text in self._atexts(stream, async_emitter(self, run_manager)):
            chunk = GenerationChunk(text=text)
            if run_manager:
                await run_manager.on_llm_new_token(text, chunk=chunk)
            yield chunk
        assert stream.result is not None
        yield self._last_chunk(stream.result)

    def _last_chunk(self, result: GGROResult) -> GenerationChunk:
        return GenerationChunk(text="", generation_info=result_metadata(result, self._model_name()))

    # -- batches: BaseLLM.batch sends every prompt to one _generate with one set of keywords, so inputs
    # whose configs set different GGRO options go in separate BaseLLM.batch calls.

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        """``BaseLLM.batch`` once per group of inputs whose configs set the same GGRO options."""
        groups = self._groups(inputs, config, kwargs)
        results = []
        for g in groups:
            batch = [inputs[i] for i in g.indices]
            results.append(
                super().batch(batch, g.configs, return_exceptions=return_exceptions, stop=g.stop, **g.kwargs)
            )
        return _in_input_order(len(inputs), groups, results)

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        """The async twin of ``batch``."""
        groups = self._groups(inputs, config, kwargs)
        results = []
        for g in groups:
            batch = [inputs[i] for i in g.indices]
            results.append(
                await super().abatch(batch, g.configs, return_exceptions=return_exceptions, stop=g.stop, **g.kwargs)
            )
        return _in_input_order(len(inputs), groups, results)

    def _groups(
        self, inputs: list[Any], config: RunnableConfig | list[RunnableConfig] | None, kwargs: dict[str, Any]
    ) -> list[_Group]:
        """The inputs grouped by the options their configs give them, in first-seen order."""
        kwargs = dict(kwargs)
        stop = kwargs.pop("stop", None)
        groups: dict[str, _Group] = {}
        for i, cfg in enumerate(get_config_list(config, len(inputs))):
            cfg_stop, cfg_kwargs = _config.with_configured(self.configurable_prefix, ensure_config(cfg), stop, kwargs)
            key = json.dumps([cfg_stop, cfg_kwargs], sort_keys=True, default=repr)
            group = groups.setdefault(key, _Group(cfg_stop, cfg_kwargs))
            group.indices.append(i)
            group.configs.append(cfg)
        return list(groups.values())


@dataclass
class _Group:
    """Inputs of one batch whose configs give them the same GGRO options."""

    stop: list[str] | None
    kwargs: dict[str, Any]
    indices: list[int] = field(default_factory=list)
    configs: list[RunnableConfig] = field(default_factory=list)


def _in_input_order(n: int, groups: list[_Group], results: list[list[Any]]) -> list[Any]:
    out: list[Any] = [None] * n
    for group, group_results in zip(groups, results):
        for i, result in zip(group.indices, group_results):
            out[i] = result
    return out


def _merged(chunks: list[GenerationChunk]) -> Generation:
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    return Generation(text=merged.text, generation_info=merged.generation_info)
