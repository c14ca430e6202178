"""The framework-free GGRO decoder (imports torch and transformers only)."""

from .calibration import calibrate_entropy_threshold, policy_entropies
from .call import OPTION_NAMES, STRATEGIES, CallOptions, CallSettings, PreparedCall
from .decoder import GGRODecoder
from .result import GenerationStream, GGROResult, GGROStats
from .rules import BaseRule, token_entropy
from .stopping import StopSequences

__all__ = [
    "OPTION_NAMES",
    "STRATEGIES",
    "BaseRule",
    "CallOptions",
    "CallSettings",
    "GGRODecoder",
    "GGROResult",
    "GGROStats",
    "GenerationStream",
    "PreparedCall",
    "StopSequences",
    "calibrate_entropy_threshold",
    "policy_entropies",
    "token_entropy",
]
