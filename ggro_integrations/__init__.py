"""GGRO (Gradient-Guided Reward Optimization) decoding for Hugging Face models,
with LangChain and LlamaIndex adapters in ``ggro_integrations.langchain`` and
``ggro_integrations.llama_index``.

``import ggro_integrations`` imports only the standard library: the names that need torch and
transformers (the decoder, ``build_decoder``, ``load_policy``) are imported on first use (PEP 562,
see ``_lazy.py``), so ``from ggro_integrations import build_decoder`` works as before.
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from ._version import __version__
from .config import GGROConfig
from .errors import (
    ConfigError,
    GenerationCancelled,
    GGROError,
    PolicyLoadError,
    PromptError,
    RewardModelError,
    VocabularyMismatchError,
)
from .events import INTERVENTION_EVENT_NAME, CandidateTrial, InterventionEvent, TextDelta

if TYPE_CHECKING:
    from .decoding import GenerationStream, GGRODecoder, GGROResult, GGROStats, calibrate_entropy_threshold
    from .factory import build_decoder
    from .policies import load_policy

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "GenerationStream": ".decoding",
        "GGRODecoder": ".decoding",
        "GGROResult": ".decoding",
        "GGROStats": ".decoding",
        "calibrate_entropy_threshold": ".decoding",
        "build_decoder": ".factory",
        "load_policy": ".policies",
    },
)

__all__ = [
    "INTERVENTION_EVENT_NAME",
    "CandidateTrial",
    "ConfigError",
    "GGROConfig",
    "GGRODecoder",
    "GGROError",
    "GenerationCancelled",
    "GGROResult",
    "GGROStats",
    "GenerationStream",
    "InterventionEvent",
    "PolicyLoadError",
    "PromptError",
    "RewardModelError",
    "TextDelta",
    "VocabularyMismatchError",
    "__version__",
    "build_decoder",
    "calibrate_entropy_threshold",
    "load_policy",
]
