"""Pins the langchain-core behaviour the LangChain adapter works around, so a release that changes it fails here.

Each assertion says what to change in ``ggro_integrations.langchain`` when it fails: such a
failure means langchain-core changed (or fixed) a behaviour one of the adapter's workarounds
depends on. Fake models only: no torch, milliseconds. What the workarounds are for is in
``ggro_integrations/langchain/_runs.py`` (events) and ``_config.py`` (chain-level config).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any
from uuid import uuid4

import pytest
from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, BaseLLM
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, Generation, LLMResult
from langchain_core.runnables import RunnableLambda, ensure_config


class _Chat(BaseChatModel):
    """Records which hooks LangChain calls, with which run manager."""

    streaming: bool | None = None
    seen: list[Any] = []  # noqa: RUF012 - a pydantic field (copied per instance), set by each test

    @property
    def _llm_type(self) -> str:
        return "pin"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
        self.seen.append(("_generate", run_manager))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="a"))])

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        self.seen.append(("_stream", run_manager))
        yield ChatGenerationChunk(message=AIMessageChunk(content="a"))

    async def _astream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        self.seen.append(("_astream", run_manager))
        yield ChatGenerationChunk(message=AIMessageChunk(content="a"))


class _LLM(BaseLLM):
    seen: list[Any] = []  # noqa: RUF012 - a pydantic field (copied per instance), set by each test

    @property
    def _llm_type(self) -> str:
        return "pin-llm"

    def _generate(self, prompts: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> LLMResult:
        self.seen.append((len(prompts), run_manager, sorted(kw)))
        return LLMResult(generations=[[Generation(text="a")] for _ in prompts])


class _Starts(BaseCallbackHandler):
    def __init__(self) -> None:
        self.runs: list[Any] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, **kwargs: Any) -> None:
        self.runs.append(run_id)

    def on_llm_start(self, serialized: Any, prompts: Any, *, run_id: Any, **kwargs: Any) -> None:
        self.runs.append(run_id)


DROP_MODEL_RUN = (
    "langchain-core now hands {hook} a run manager in {path}. If it does on every path, delete the ModelRun "
    "machinery: ModelRun, open_run and _ACTIVE_RUN in ggro_integrations/langchain/_runs.py (and its fallback in "
    "sync_emitter/async_emitter), and the open_run/run.active()/run.steps() lines of GGROFields.invoke/ainvoke/"
    "stream/astream in _base.py (those methods stay for chain-level config)."
)


async def _drain(items: Any) -> list[Any]:
    return [x async for x in items]


def _managers(model: _Chat, hook: str) -> list[Any]:
    return [rm for name, rm in model.seen if name == hook]


def test_stream_and_astream_call__stream_without_a_run_manager():
    m = _Chat(seen=[])
    list(m.stream("hi", {"callbacks": [_Starts()]}))
    asyncio.run(_drain(m.astream("hi", {"callbacks": [_Starts()]})))
    assert _managers(m, "_stream") == [None], DROP_MODEL_RUN.format(hook="_stream", path="stream()")
    assert _managers(m, "_astream") == [None], DROP_MODEL_RUN.format(hook="_astream", path="astream()")


def test_invoke_streaming_internally_calls__stream_without_a_run_manager():
    m = _Chat(streaming=True, seen=[])
    m.invoke("hi", {"callbacks": [_Starts()]})
    asyncio.run(m.ainvoke("hi", {"callbacks": [_Starts()]}))
    # Under astream_events, ainvoke inside a lambda (a graph node) streams internally too.
    m2 = _Chat(seen=[])

    async def node(x: Any, config: Any) -> Any:
        return await m2.ainvoke(x, config)

    asyncio.run(_drain(RunnableLambda(node).astream_events("hi", version="v2")))
    path = "invoke()/ainvoke() streaming internally (_generate_with_cache)"
    assert _managers(m, "_stream") == [None], DROP_MODEL_RUN.format(hook="_stream", path=path)
    assert _managers(m, "_astream") == [None], DROP_MODEL_RUN.format(hook="_astream", path=path)
    assert _managers(m2, "_astream") == [None], DROP_MODEL_RUN.format(hook="_astream", path="astream_events")


def test_run_manager_on_custom_event_is_still_a_no_op():
    got: list[Any] = []

    class Handler(BaseCallbackHandler):
        def on_custom_event(self, name: str, data: Any, *, run_id: Any, **kwargs: Any) -> None:
            got.append(run_id)

    rm = CallbackManagerForLLMRun(run_id=uuid4(), handlers=[Handler()], inheritable_handlers=[])
    rm.on_custom_event("x", {}, run_id=rm.run_id)
    assert got == [], (
        "CallbackManagerForLLMRun.on_custom_event now dispatches: in ggro_integrations/langchain/_runs.py emit "
        "with run_manager.on_custom_event(...) and delete _copy (the CallbackManager rebuilt from its handlers)."
    )


@pytest.mark.parametrize("path", ["invoke", "stream", "ainvoke", "astream"])
def test_config_run_id_becomes_the_model_run_id(path):
    # open_run fixes the model run's id up front through the documented RunnableConfig["run_id"], so the
    # events _stream sends reach that run. If this fails, they go to a run nobody opened.
    m, starts, run_id = _Chat(seen=[]), _Starts(), uuid4()
    config: Any = {"callbacks": [starts], "run_id": run_id}
    calls = {
        "invoke": lambda: m.invoke("hi", config),
        "stream": lambda: list(m.stream("hi", config)),
        "ainvoke": lambda: asyncio.run(m.ainvoke("hi", config)),
        "astream": lambda: asyncio.run(_drain(m.astream("hi", config))),
    }
    calls[path]()
    assert starts.runs == [run_id], (
        f"BaseChatModel.{path} no longer opens the model run with config['run_id']: ModelRun in "
        "ggro_integrations/langchain/_runs.py must learn the run id another way (events now miss their run)."
    )


def test_basellm_generate_passes_only_the_first_run_manager():
    m, starts = _LLM(seen=[]), _Starts()
    m.generate(["a", "b"], callbacks=[starts])
    ((n, rm, kw),) = m.seen
    assert n == 2 and rm.run_id == starts.runs[0] and kw == [], (
        "BaseLLM._generate now gets every prompt's run manager (its 'TODO: support multiple run managers'): "
        "delete GGROLLM._generate_helper/_agenerate_helper and prompt_runs/prompt_run in _runs.py."
    )


def test_the_private_helpers_ggrollm_overrides_keep_their_signature():
    # GGROLLM._generate_helper/_agenerate_helper are the adapter's only overrides of private langchain-core
    # methods; they pass every argument through unchanged, so only the signature matters.
    expected = (
        "(self, prompts: 'list[str]', stop: 'list[str] | None', run_managers: 'list[CallbackManagerForLLMRun]', "
        "*, new_arg_supported: 'bool', **kwargs: 'Any') -> 'LLMResult'"
    )
    for name in ("_generate_helper", "_agenerate_helper"):
        sig = str(inspect.signature(getattr(BaseLLM, name)))
        want = (
            expected.replace("CallbackManagerForLLMRun", "AsyncCallbackManagerForLLMRun") if "_a" in name else expected
        )
        assert sig == want, (
            f"BaseLLM.{name} changed signature to {sig}: update GGROLLM.{name} in ggro_integrations/langchain/llms.py "
            "(it only wraps the call in prompt_runs(run_managers)), or delete it if run managers reach _generate."
        )


def test_v3_stream_events_bypass_invoke_and_stream():
    calls: list[str] = []

    class Spy(_Chat):
        def invoke(self, *a: Any, **k: Any) -> Any:
            calls.append("invoke")
            return super().invoke(*a, **k)

        def stream(self, *a: Any, **k: Any) -> Any:
            calls.append("stream")
            return super().stream(*a, **k)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # v3 is beta and says so
        assert Spy(seen=[]).stream_events("hi", version="v3").output.text == "a"
    assert calls == [], (
        "stream_events(version='v3') now goes through invoke()/stream(): delete ChatGGRO.stream_events/"
        "astream_events in ggro_integrations/langchain/chat_models.py (they only read the chain-level config "
        "that invoke/stream now read for it)."
    )


def test_ensure_config_sees_the_enclosing_runnables_config():
    # A LangGraph node or a lambda that calls model.invoke(messages) without its config: GGROFields._begin
    # reads config["configurable"] through ensure_config, which must still find the caller's config.
    seen = RunnableLambda(lambda x: ensure_config().get("configurable")).invoke("x", {"configurable": {"k": 1}})
    assert seen == {"k": 1}, (
        "ensure_config() no longer returns the enclosing runnable's config: chain-level GGRO options are now "
        "ignored when a node calls model.invoke(x) without config; GGROFields._begin must find them another way."
    )
