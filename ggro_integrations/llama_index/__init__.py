"""GGRO for LlamaIndex: ``GGROLLM`` (a ``CustomLLM``) and ``GGROInterventionEvent`` instrumentation.

Example:
    >>> from ggro_integrations.llama_index import GGROLLM              # doctest: +SKIP
    >>> llm = GGROLLM.from_model_id("default", reward_model="default")  # doctest: +SKIP
    >>> index.as_query_engine(llm=llm).query("...")                      # doctest: +SKIP
"""

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a test that hides the package
    raise ImportError(
        "ggro_integrations.llama_index needs LlamaIndex (llama-index-core), which is not installed: "
        f'{exc}. Install it with: pip install "ggro-integrations[llama-index]" (from a checkout: pip install -e ".[llama-index]")'
    ) from exc

from .embeddings import MiniLMEmbedding
from .events import DISPATCHER_NAME, GGROInterventionEvent
from .llm import GGROLLM

__all__ = ["DISPATCHER_NAME", "GGROLLM", "GGROInterventionEvent", "MiniLMEmbedding"]
