"""Reading a causal LM with ``from_pretrained``, and asking the Hub once whether it is there.

Shared by the policy loader and the embedded default's loader. When the Hub cannot be used
(``HF_HUB_OFFLINE``, or no answer within a few seconds), loads go straight to the local
Hugging Face cache instead of letting ``huggingface_hub`` retry an unreachable host five
times (about 20 s) before failing.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub import constants as hub_constants
from huggingface_hub.utils import get_session
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .loading import pretrained_kwargs, progress_bars

HUB_PROBE_TIMEOUT_S = 3.0
"""How long to wait for the Hub to answer one request before treating it as unreachable."""


def hub_unavailable() -> str | None:
    """Why the Hub cannot be used now (a phrase for an error message), or None when it answered."""
    if hub_constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    try:
        # One request, no retries; goes through huggingface_hub's own session (proxies, headers).
        get_session().head(hub_constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - any failure to get an answer means "unreachable"
        return f"the Hugging Face Hub ({hub_constants.ENDPOINT}) is unreachable ({type(exc).__name__}: {exc})"
    return None


def load_causal_lm(
    source: str, *, dtype: Any, trust_remote_code: bool, progress: bool, local_files_only: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(model, tokenizer)`` from a local directory or a hub id (``local_files_only``: the HF cache only)."""
    kwargs = pretrained_kwargs(source, dtype=dtype, trust_remote_code=trust_remote_code)
    if local_files_only:
        kwargs["local_files_only"] = True
    with progress_bars(progress):
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(
            source, trust_remote_code=trust_remote_code, **({"local_files_only": True} if local_files_only else {})
        )
    return model, tokenizer
