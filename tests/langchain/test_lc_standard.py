"""LangChain's standard unit-test suite (``langchain-tests``) for ChatGGRO on a tiny model.

langchain-tests 1.1.9 ships unit suites for chat models, embeddings and tools only;
there is no LLM (``BaseLLM``) unit suite, so GGROLLM is covered by test_lc_llm.py.

Skips inside the suite, and why:
- ``test_init_from_env``: a local model reads no API key or endpoint from the environment.
- ``test_serdes``: ChatGGRO is not LangChain-serialisable (it holds a loaded model and a
  decoder object); ``is_lc_serializable()`` stays False, so the suite skips it itself.
- ``test_init_time``: marked ``benchmark``; it runs (pytest-benchmark is installed) unless
  benchmarks are disabled with ``--benchmark-disable``.
"""

from __future__ import annotations

from typing import Any

from langchain_tests.unit_tests import ChatModelUnitTests
from lc_tiny import tiny_decoder

from ggro_integrations.langchain import ChatGGRO

_DECODER = tiny_decoder()  # one shared decoder: the suite builds the model many times


class TestChatGGROStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatGGRO]:
        return ChatGGRO

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"decoder": _DECODER}

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        # A GGRO model is bound to one loaded policy; per-call `model=` is refused with a clear error.
        return False
