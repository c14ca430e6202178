"""The policy on a serving engine (llama-server, vLLM, SGLang): HTTP client, dialects, top-N entropy.

Needs ``httpx`` (``pip install "ggro-integrations[server]"``). The reward model stays
in-process; only the policy's decoding goes over HTTP.
"""

from .backend import ServerBackend, ServerNextToken
from .client import AsyncServerClient, CompletionStream, RequestCancelled, RetryPolicy, ServerClient
from .dialects import ENGINES
from .entropy import TopNEntropy, entropy_bounds, topn_entropy
from .errors import (
    IncompleteResponseError,
    LogprobsLimitError,
    ServerDisconnectedError,
    ServerError,
    ServerInternalError,
    ServerRequestError,
    ServerTimeoutError,
    ServerUnreachableError,
    ServerVocabularyError,
    StreamGapError,
)
from .types import CompletionRequest, CompletionResult, FinishReason, Position, ServerInfo, TokenLogprob

__all__ = [
    "ENGINES",
    "AsyncServerClient",
    "CompletionRequest",
    "CompletionResult",
    "CompletionStream",
    "FinishReason",
    "IncompleteResponseError",
    "LogprobsLimitError",
    "Position",
    "RequestCancelled",
    "RetryPolicy",
    "ServerBackend",
    "ServerClient",
    "ServerDisconnectedError",
    "ServerError",
    "ServerInfo",
    "ServerInternalError",
    "ServerNextToken",
    "ServerRequestError",
    "ServerTimeoutError",
    "ServerUnreachableError",
    "ServerVocabularyError",
    "StreamGapError",
    "TokenLogprob",
    "TopNEntropy",
    "entropy_bounds",
    "topn_entropy",
]
