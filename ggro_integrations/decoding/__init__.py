"""The framework-free GGRO decoder (imports torch and transformers only)."""

from .calibration import calibrate_entropy_threshold, policy_entropies
from .decoder import STRATEGIES, GGRODecoder
from .result import GenerationStream, GGROResult, GGROStats
from .rules import BaseRule, token_entropy
from .stopping import StopSequences

__all__ = [
    "STRATEGIES",
    "BaseRule",
    "GGRODecoder",
    "GGROResult",
    "GGROStats",
    "GenerationStream",
    "StopSequences",
    "calibrate_entropy_threshold",
    "policy_entropies",
    "token_entropy",
]
