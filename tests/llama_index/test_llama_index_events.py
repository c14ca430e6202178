"""GGRO interventions reach LlamaIndex event handlers, inside the span of the LLM call that made them."""

from __future__ import annotations

import pytest
from conftest import PROMPT, EventRecorder
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.instrumentation import get_dispatcher

from ggro_integrations import InterventionEvent
from ggro_integrations.llama_index import DISPATCHER_NAME, GGROInterventionEvent

MESSAGES = [ChatMessage(role=MessageRole.USER, content=PROMPT)]


def _without_time(data):
    return {k: v for k, v in data.items() if k != "seconds"}


def _check_call(events, spans, method, start_type, end_type, response_events):
    """The GGRO events of one call: the right content, in the call's span, between its start and end."""
    names = [e.class_name() for e in events.events]
    start = names.index(start_type)
    end = len(names) - 1 - names[::-1].index(end_type)
    call_span = events.events[start].span_id
    assert call_span.startswith(f"GGROLLM.{method}-")
    ggro = events.of_type("GGROInterventionEvent")
    assert ggro, "no GGRO event reached the handler"
    assert [_without_time(e.data) for e in ggro] == [_without_time(d) for d in response_events]
    for event in ggro:
        assert event.span_id == call_span
        assert start < events.events.index(event) < end
    assert call_span in spans.parents  # a real span that span handlers saw open
    return ggro


def test_complete_events_in_the_call_span(llm, recorder):
    events, spans = recorder
    response = llm.complete(PROMPT)
    _check_call(
        events,
        spans,
        "complete",
        "LLMCompletionStartEvent",
        "LLMCompletionEndEvent",
        response.additional_kwargs["interventions"],
    )


def test_chat_events_in_the_call_span(llm, recorder):
    events, spans = recorder
    response = llm.chat(MESSAGES)
    _check_call(
        events, spans, "chat", "LLMChatStartEvent", "LLMChatEndEvent", response.additional_kwargs["interventions"]
    )


def test_stream_complete_events_fire_while_streaming(llm, recorder):
    events, spans = recorder
    stream = llm.stream_complete(PROMPT)
    assert events.of_type("GGROInterventionEvent") == []  # nothing decoded before iteration
    seen_at_chunk = []
    chunks = []
    for chunk in stream:
        seen_at_chunk.append(len(events.of_type("GGROInterventionEvent")))
        chunks.append(chunk)
    total = len(chunks[-1].additional_kwargs["interventions"])
    assert seen_at_chunk[-1] == total
    # Events arrive as decoding goes, interleaved with text, not all at the end.
    assert seen_at_chunk[0] < total
    ggro = _check_call(
        events,
        spans,
        "stream_complete",
        "LLMCompletionStartEvent",
        "LLMCompletionEndEvent",
        chunks[-1].additional_kwargs["interventions"],
    )
    # Same span as LlamaIndex's own streaming events for this call.
    progress = events.of_type("LLMCompletionInProgressEvent")
    assert {e.span_id for e in progress} == {ggro[0].span_id}


async def test_async_stream_chat_events(llm, recorder):
    events, spans = recorder
    chunks = [c async for c in await llm.astream_chat(MESSAGES)]
    _check_call(
        events,
        spans,
        "astream_chat",
        "LLMChatStartEvent",
        "LLMChatEndEvent",
        chunks[-1].additional_kwargs["interventions"],
    )


async def test_acomplete_events(llm, recorder):
    events, spans = recorder
    response = await llm.acomplete(PROMPT)
    _check_call(
        events,
        spans,
        "acomplete",
        "LLMCompletionStartEvent",
        "LLMCompletionEndEvent",
        response.additional_kwargs["interventions"],
    )


def test_event_fields_mirror_the_core_event(llm, recorder):
    events, _ = recorder
    llm.complete(PROMPT)
    for event in events.of_type("GGROInterventionEvent"):
        assert isinstance(event, GGROInterventionEvent)
        core = event.intervention
        assert isinstance(core, InterventionEvent)
        assert core.to_dict() == event.data
        assert (event.accepted, event.entropy, event.reward_gain) == (core.accepted, core.entropy, core.reward_gain)
        assert event.reward_model == "tiny-rm-a"
        dumped = event.model_dump()
        # Flat scalars, so handlers that keep only primitive attributes (OpenTelemetry) still show them.
        assert dumped["class_name"] == "GGROInterventionEvent"
        assert isinstance(dumped["accepted"], bool) and isinstance(dumped["entropy"], float)


def test_events_inside_a_query_span(rag_llm, recorder):
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    events, spans = recorder
    index = VectorStoreIndex.from_documents(
        [Document(text="Knives stay sharp on a whetstone.")], embed_model=MockEmbedding(embed_dim=8)
    )
    index.as_query_engine(llm=rag_llm).query(PROMPT)
    ggro = events.of_type("GGROInterventionEvent")
    assert ggro
    query_span = events.of_type("QueryStartEvent")[0].span_id
    for event in ggro:
        assert event.span_id.startswith("GGROLLM.chat-")
        assert query_span in spans.ancestors(event.span_id)


def test_ggro_dispatcher_carries_only_ggro_events(llm, recorder):
    own = EventRecorder()
    get_dispatcher(DISPATCHER_NAME).add_event_handler(own)
    try:
        response = llm.complete(PROMPT)
    finally:
        get_dispatcher(DISPATCHER_NAME).event_handlers.remove(own)
    assert len(own.events) == len(response.additional_kwargs["interventions"]) > 0
    assert all(isinstance(e, GGROInterventionEvent) for e in own.events)
    # They still reach the root dispatcher's handlers, alongside LlamaIndex's own events.
    assert len(recorder[0].of_type("GGROInterventionEvent")) == len(own.events)
    assert len(recorder[0].events) > len(own.events)


@pytest.fixture(autouse=True)
def _isolated(recorder):
    """Every test here starts with an empty recorder."""
    recorder[0].events.clear()
