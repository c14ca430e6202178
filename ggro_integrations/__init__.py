"""GGRO (Gradient-Guided Reward Optimization) decoding for Hugging Face models,
with LangChain and LlamaIndex adapters in ``ggro_integrations.langchain`` and
``ggro_integrations.llama_index``."""

from ._version import __version__
from .config import GGROConfig
from .decoding import GenerationStream, GGRODecoder, GGROResult, GGROStats, calibrate_entropy_threshold
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
from .factory import build_decoder
from .policies import load_policy

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
