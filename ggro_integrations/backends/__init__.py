"""Where the policy runs: the seam the decoder calls (``base.py``) and its implementations."""

from .base import NextToken, PolicyBackend, PolicySession, PolicyUsage, Sampling
from .transformers import LogitsNextToken, TransformersBackend

__all__ = [
    "LogitsNextToken",
    "NextToken",
    "PolicyBackend",
    "PolicySession",
    "PolicyUsage",
    "Sampling",
    "TransformersBackend",
]
