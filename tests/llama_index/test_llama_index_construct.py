"""Building GGROLLM: from names (shared, cached models), from a decoder, and without LlamaIndex installed."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from conftest import CONFIG, PROMPT, SECOND_RM

from ggro_integrations.llama_index import GGROLLM
from ggro_integrations.rewards.registry import load_reward_model, reward_load_count


def test_from_model_id_shares_loaded_models(li_policy, li_tokenizer, li_reward_b):
    first = GGROLLM.from_model_id((li_policy, li_tokenizer), SECOND_RM, **CONFIG)
    loads = reward_load_count(SECOND_RM)
    second = GGROLLM.from_model_id((li_policy, li_tokenizer), SECOND_RM, entropy_threshold=2.0)
    assert reward_load_count(SECOND_RM) == loads  # the registry's cache, not a second load
    assert first.decoder.model is second.decoder.model is li_policy
    assert first.decoder.reward_model is second.decoder.reward_model is load_reward_model(SECOND_RM)
    assert first.reward_model == SECOND_RM  # the name stays visible to traces
    assert first.to_payload()["reward_model"] == "tiny-rm-b"
    assert first.decoder.config.entropy_threshold == CONFIG["entropy_threshold"]
    assert second.decoder.config.entropy_threshold == 2.0
    assert first.complete(PROMPT).text == first.decoder.generate(PROMPT).text


def test_from_model_id_splits_llm_fields_from_ggro_options(li_policy, li_tokenizer, li_reward_b):
    llm = GGROLLM.from_model_id(
        (li_policy, li_tokenizer), SECOND_RM, model_name="tiny", system_prompt="Be brief.", max_new_tokens=5
    )
    assert (llm.model_name, llm.system_prompt) == ("tiny", "Be brief.")
    assert llm.decoder.config.max_new_tokens == 5 == llm.metadata.num_output


def test_from_model_id_accepts_torch_device_and_dtype(li_policy, li_tokenizer, li_reward_b):
    llm = GGROLLM.from_model_id((li_policy, li_tokenizer), SECOND_RM, device=torch.device("cpu"), dtype=torch.float32)
    assert (llm.device, llm.dtype) == ("cpu", "float32")
    # A per-call name resolves through the same registry key as the decoder's own reward model.
    assert llm._resolve_reward(SECOND_RM) is llm.decoder.reward_model


def test_payload_shows_ggro_settings(llm):
    payload = llm.with_options(entropy_threshold=2.2, strategy="greedy").to_payload()
    assert payload["class_name"] == "GGROLLM"
    assert payload["ggro_options"]["entropy_threshold"] == 2.2
    assert payload["strategy"] == "greedy"
    assert payload["reward_model"] == "tiny-rm-a"


def test_decoder_must_be_a_decoder():
    with pytest.raises(TypeError, match="GGRODecoder"):
        GGROLLM(decoder="not a decoder")


def test_missing_llama_index_names_the_extra(monkeypatch):
    for name in list(sys.modules):
        if name.startswith("ggro_integrations.llama_index"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "llama_index.core", None)  # makes `import llama_index.core` fail
    with pytest.raises(ImportError, match=r'pip install "ggro-integrations\[llama-index\]"'):
        importlib.import_module("ggro_integrations.llama_index")


@pytest.mark.slow
def test_default_model_and_reward():
    """The embedded SmolLM2 policy with the default reward head (needs both installed)."""
    try:
        llm = GGROLLM.from_model_id("default", reward_model="default", max_new_tokens=6)
    except Exception as exc:  # noqa: BLE001 - the default reward may not be installed yet
        pytest.skip(f"default policy or reward model unavailable: {exc}")
    assert llm.model_name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert llm.metadata.is_chat_model and llm.metadata.context_window == 8192
    assert llm.complete("Say hello.").text
