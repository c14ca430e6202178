"""The framework-free GGRO decoder (imports torch and transformers only)."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .calibration import calibrate_entropy_threshold, policy_entropies
    from .call import OPTION_NAMES, STRATEGIES, CallOptions, CallSettings, PreparedCall
    from .decoder import GGRODecoder
    from .result import GenerationStream, GGROResult, GGROStats
    from .rules import BaseRule, token_entropy
    from .stopping import StopSequences

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "calibrate_entropy_threshold": ".calibration",
        "policy_entropies": ".calibration",
        "OPTION_NAMES": ".call",
        "STRATEGIES": ".call",
        "CallOptions": ".call",
        "CallSettings": ".call",
        "PreparedCall": ".call",
        "GGRODecoder": ".decoder",
        "GenerationStream": ".result",
        "GGROResult": ".result",
        "GGROStats": ".result",
        "BaseRule": ".rules",
        "token_entropy": ".rules",
        "StopSequences": ".stopping",
    },
)

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
