"""GGRO (Gradient-Guided Reward Optimization) decoding for Hugging Face models,
with LangChain and LlamaIndex adapters in ``ggro_integrations.langchain`` and
``ggro_integrations.llama_index``."""

from ._version import __version__
from .config import GGROConfig
from .decoding import GenerationStream, GGRODecoder, GGROResult, GGROStats
from .errors import ConfigError, GGROError, PromptError, RewardModelError, VocabularyMismatchError
from .events import INTERVENTION_EVENT_NAME, CandidateTrial, InterventionEvent, TextDelta

__all__ = [
    "INTERVENTION_EVENT_NAME",
    "CandidateTrial",
    "ConfigError",
    "GGROConfig",
    "GGRODecoder",
    "GGROError",
    "GGROResult",
    "GGROStats",
    "GenerationStream",
    "InterventionEvent",
    "PromptError",
    "RewardModelError",
    "TextDelta",
    "VocabularyMismatchError",
    "__version__",
]
