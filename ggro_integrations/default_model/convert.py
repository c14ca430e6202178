"""Converting the packaged GGUF into a plain safetensors checkpoint, once.

Loading a GGUF through transformers de-quantizes every tensor (tens of seconds), so the first
use converts it into ``ggro_home()/models/SmolLM2-135M-Instruct/`` and every later load reads
that directory (about a second). The conversion is safe against interruption and concurrency
(temporary sibling directory, atomic rename, inter-process file lock) and records content
hashes that every load checks (``checkpoint.py``).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any

import filelock
import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..errors import PolicyLoadError
from ..loading import progress_bars
from .checkpoint import InvalidCheckpoint, is_complete, record_checkpoint, verify_checkpoint
from .paths import DEFAULT_NAME, DEFAULT_POLICY_ID

# SmolLM2-Instruct's chat template as published on the Hub. The packaged GGUF carries it in its
# metadata, but other GGUF builds may not, and a tokenizer without a template makes
# ``apply_chat_template`` fail, so we set it when missing.
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


def load_gguf(gguf_path: pathlib.Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer straight from a GGUF (slow: de-quantizes every tensor)."""
    directory, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name)
    return model, tokenizer


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, config: Any) -> None:
    """Make the GGUF tokenizer match the Hub release before saving it."""
    if "<|im_start|>" not in (tokenizer.chat_template or ""):
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    # GGUF metadata has no model_max_length, so transformers uses its "huge" sentinel; the Hub
    # tokenizer says 8192 (= max_position_embeddings).
    max_pos = getattr(config, "max_position_embeddings", None)
    if max_pos and tokenizer.model_max_length > max_pos:
        tokenizer.model_max_length = max_pos
        tokenizer.init_kwargs["model_max_length"] = max_pos
    # Loading offline records these flags in init_kwargs; persisting them would pin the saved
    # checkpoint to offline mode for no reason.
    for junk in ("is_local", "local_files_only"):
        tokenizer.init_kwargs.pop(junk, None)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token


def plain_copy(gguf_model: PreTrainedModel) -> PreTrainedModel:
    """Rebuild ``gguf_model`` as an ordinary, serialisable model.

    transformers refuses ``save_pretrained`` on GGUF-loaded models because their config carries
    a GGUF ``quantization_config``, even though the weights are already plain de-quantized
    tensors. We build a fresh model from a cleaned config on the meta device (no pointless
    random init) and hand it the GGUF model's tensors.
    """
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    # "_model_name_or_path" comes from GGUF metadata (a training-run name); it is meaningless
    # for the converted checkpoint.
    config_dict.pop("_model_name_or_path", None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=gguf_model.dtype)
    state = gguf_model.state_dict()
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    # With tied embeddings the GGUF model's state dict already holds both names pointing at one
    # tensor; anything else missing is a real bug.
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise PolicyLoadError(f"GGUF conversion produced mismatched weights: missing={missing}, unexpected={unexpected}")
    # load_state_dict(assign=True) replaces Parameter objects, which breaks the lm_head <->
    # embed_tokens tie; re-tie so save_pretrained stores one copy and the reloaded model ties them again.
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
        out, inp = model.get_output_embeddings(), model.get_input_embeddings()
        if out is not None and out.weight is not inp.weight:
            out.weight = inp.weight
    # Non-persistent buffers (e.g. rotary inv_freq) were created on meta and are not in the
    # state dict; copy them from the live model.
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


def _lock(path: pathlib.Path, *, progress: bool) -> filelock.FileLock:
    """The inter-process conversion lock, taken (announcing a wait when another process holds it).

    The atomic rename already keeps two concurrent conversions correct; the lock only saves
    doing 40 s of work twice.
    """
    lock = filelock.FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        if progress:
            print(f"Waiting for another process converting into {path.parent} ...", file=sys.stderr, flush=True)
        lock.acquire()
    return lock


def _usable(target: pathlib.Path) -> bool:
    if not is_complete(target):
        return False
    try:
        verify_checkpoint(target)
    except InvalidCheckpoint:
        return False
    return True


def convert_gguf_policy(gguf_path: pathlib.Path, target: pathlib.Path, *, progress: bool = True) -> pathlib.Path:
    """Convert ``gguf_path`` into a safetensors checkpoint at ``target``, unless a valid one is there.

    Work happens in a temporary sibling directory, renamed into place only when complete, under
    an inter-process file lock. If ``target`` already holds a checkpoint that passes its
    integrity check (possibly written meanwhile by another process) nothing is done; one that
    fails it is moved aside (``<name>.invalid-<time>``, never deleted) when the new one is ready.
    Returns ``target``.
    """
    target = pathlib.Path(target)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp_prefix = f".{target.name}.tmp-"
    lock = _lock(parent / f".{target.name}.lock", progress=progress)
    try:
        if _usable(target):
            return target  # another process converted while we waited
        # Holding the lock means every tmp dir left is from a killed run.
        for stale in parent.glob(tmp_prefix + "*"):
            shutil.rmtree(stale, ignore_errors=True)
        if progress:
            print(f"Converting {DEFAULT_NAME} (GGUF, one time, ~40 s) \u2192 {target}", file=sys.stderr, flush=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=tmp_prefix, dir=parent))
        # mkdtemp makes the dir 0700; the cache may be shared between users.
        os.chmod(tmp, 0o755)
        bar = tqdm(total=4, desc="ggro: converting", unit="step", file=sys.stderr, disable=not progress)
        try:
            with progress_bars(progress):
                gguf_model, tokenizer = load_gguf(gguf_path)
            bar.set_postfix_str("loaded GGUF")
            bar.update(1)
            prepare_tokenizer(tokenizer, gguf_model.config)
            model = plain_copy(gguf_model)
            del gguf_model
            bar.set_postfix_str("rebuilt model")
            bar.update(1)
            with progress_bars(progress):
                model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            for f in tmp.iterdir():
                os.chmod(f, 0o644)  # some writers create 0600 files
            if not is_complete(tmp):
                raise PolicyLoadError(f"GGUF conversion wrote an incomplete checkpoint in {tmp}")
            record_checkpoint(
                tmp,
                {
                    "source": str(gguf_path),
                    "source_size": gguf_path.stat().st_size,
                    "hub_id": DEFAULT_POLICY_ID,
                    "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
            )
            bar.set_postfix_str("saved safetensors + tokenizer + hashes")
            bar.update(1)
            _swap_in(tmp, target)
            bar.set_postfix_str("done")
            bar.update(1)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            bar.close()
    finally:
        lock.release()
    return target


def _swap_in(tmp: pathlib.Path, target: pathlib.Path) -> None:
    """Put the finished ``tmp`` at ``target``; an existing (invalid) ``target`` is moved aside first.

    The old directory stays in place during the whole conversion, so readers never see a gap
    longer than two renames.
    """
    if target.exists():
        target.rename(target.parent / f"{target.name}.invalid-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    try:
        os.rename(tmp, target)
    except OSError:
        # Lost a race with a lock-less writer: keep theirs if it is valid.
        if not _usable(target):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
