"""GGROLLM as the LLM of LlamaIndex query and chat engines, end to end (mock embeddings)."""

from __future__ import annotations

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding

from ggro_integrations.llama_index.llm import to_conversation

DOCS = [
    "Whetstones sharpen kitchen knives; soak the stone in water first.",
    "Store bleach away from ammonia: mixing them releases toxic gas.",
    "Python is a programming language with readable syntax.",
]
QUESTION = "How do I sharpen a knife?"


@pytest.fixture()
def index():
    return VectorStoreIndex.from_documents([Document(text=t) for t in DOCS], embed_model=MockEmbedding(embed_dim=8))


def _llm_inputs(events):
    """The messages each LLM call of the engine received, as LlamaIndex reported them."""
    return [e.messages for e in events.of_type("LLMChatStartEvent")]


def test_query_engine_answers_with_ggro(index, rag_llm, recorder):
    events, _ = recorder
    response = index.as_query_engine(llm=rag_llm, similarity_top_k=2).query(QUESTION)
    assert len(response.source_nodes) == 2
    assert {n.node.get_content() for n in response.source_nodes} <= set(DOCS)
    (messages,) = _llm_inputs(events)
    prompt = "\n".join(m.content for m in messages)
    assert QUESTION in prompt and all(n.node.get_content() in prompt for n in response.source_nodes)
    # The answer is exactly what the decoder produces for the engine's messages, steered by GGRO.
    expected = rag_llm.decoder.generate(to_conversation(messages))
    assert response.response == expected.text
    ggro = events.of_type("GGROInterventionEvent")
    assert len(ggro) == len(expected.interventions) > 0


def test_streaming_query_engine(index, rag_llm):
    answer = index.as_query_engine(llm=rag_llm).query(QUESTION).response
    streaming = index.as_query_engine(llm=rag_llm, streaming=True).query(QUESTION)
    assert "".join(streaming.response_gen) == answer


def test_per_query_options(index, rag_llm, recorder):
    events, _ = recorder
    engine = index.as_query_engine(llm=rag_llm.with_options(entropy_threshold=3.0, num_refinements=1))
    engine.query(QUESTION)
    ggro = events.of_type("GGROInterventionEvent")
    assert ggro and all(e.threshold == 3.0 and e.refinements_used <= 1 for e in ggro)


def test_chat_engine_two_turns(index, rag_llm, recorder):
    events, _ = recorder
    engine = index.as_chat_engine(chat_mode="context", llm=rag_llm)
    first = engine.chat(QUESTION)
    second = engine.chat("And how do I store bleach?")
    calls = _llm_inputs(events)
    assert len(calls) == 2
    # The second call carries the first exchange (memory) and the new question.
    contents = [m.content for m in calls[1]]
    assert QUESTION in contents and first.response in contents and "And how do I store bleach?" in contents
    assert second.response == rag_llm.decoder.generate(to_conversation(calls[1])).text
    assert first.source_nodes and second.source_nodes


def test_chat_engine_streaming(index, rag_llm):
    expected = index.as_chat_engine(chat_mode="context", llm=rag_llm).chat(QUESTION).response
    streaming = index.as_chat_engine(chat_mode="context", llm=rag_llm).stream_chat(QUESTION)
    assert "".join(streaming.response_gen) == expected


async def test_chat_engine_async(index, rag_llm):
    expected = index.as_chat_engine(chat_mode="context", llm=rag_llm).chat(QUESTION).response
    response = await index.as_chat_engine(chat_mode="context", llm=rag_llm).achat(QUESTION)
    assert response.response == expected
