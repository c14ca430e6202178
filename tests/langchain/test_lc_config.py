"""Fields, per-call options and chain-level configuration (configurable_fields), without reloads."""

from __future__ import annotations

import pytest
from lc_tiny import parts

from ggro_integrations.config import config_field_names
from ggro_integrations.errors import ConfigError
from ggro_integrations.langchain import CONFIGURABLE, GGROLLM, ChatGGRO, configurable_ggro
from ggro_integrations.models import policy_load_count
from ggro_integrations.rewards import registry

QUESTION = "Hello there, how are you?"


@pytest.fixture
def registered():
    """The tiny rewards "tiny-a" and "tiny-b" in the registry, counting how often each factory builds."""
    _, _, reward_a, reward_b = parts()
    builds = {"tiny-a": 0, "tiny-b": 0}

    def factory(name, reward):
        def build(**kwargs):
            builds[name] += 1
            return reward

        return build

    registry.register_reward_model("tiny-a", factory("tiny-a", reward_a), overwrite=True)
    registry.register_reward_model("tiny-b", factory("tiny-b", reward_b), overwrite=True)
    yield builds
    registry.clear_reward_cache()
    with registry._lock:  # no public unregister: keep other tests' view of the registry unchanged
        for name in builds:
            registry._factories.pop(name, None)


@pytest.mark.parametrize("cls", [ChatGGRO, GGROLLM])
def test_every_ggro_knob_is_a_documented_field(cls):
    fields = cls.model_fields
    for name in config_field_names():
        assert name in fields, name
        assert fields[name].description, f"{name} has no docstring"
    assert set(config_field_names()) | {"reward_model", "strategy"} == set(CONFIGURABLE)


def test_fields_override_the_decoder_and_none_keeps_it(decoder):
    assert ChatGGRO(decoder=decoder)._effective_config() == decoder.config
    chat = ChatGGRO(decoder=decoder, entropy_threshold=3.0, max_tokens=5, stop=["x"])
    cfg = chat._effective_config()
    assert (cfg.entropy_threshold, cfg.max_new_tokens, cfg.stop) == (3.0, 5, ("x",))
    assert chat._get_ls_params(stop=["y"], max_tokens=7) == {
        "ls_provider": "ggro",
        "ls_model_name": "LlamaForCausalLM",
        "ls_model_type": "chat",
        "ls_temperature": 0.0,
        "ls_max_tokens": 7,
        "ls_stop": ["y"],
    }
    assert chat._identifying_params["entropy_threshold"] == 3.0
    assert chat._identifying_params["reward_model"] == "tiny-a"


def test_bad_options_fail_early_with_the_name_and_fix(decoder):
    with pytest.raises(ValueError, match="Did you mean 'entropy_threshold'"):
        ChatGGRO(decoder=decoder, entropy_treshold=2.0)
    with pytest.raises(ValueError, match="nudge_top_k must be >= 1"):
        ChatGGRO(decoder=decoder, nudge_top_k=0)
    with pytest.raises(ConfigError, match="unknown option"):
        ChatGGRO(decoder=decoder).invoke(QUESTION, entropy_treshold=2.0)
    with pytest.raises(ConfigError, match="entropy_threshold must be >= 0"):
        ChatGGRO(decoder=decoder).invoke(QUESTION, entropy_threshold=-1.0)
    # LangChain's standard hosted-model parameters are accepted and ignored.
    ChatGGRO(decoder=decoder, api_key="x", timeout=5, max_retries=1)


def test_construction_errors_are_the_packages_own_not_pydantics(decoder):
    from pydantic import ValidationError

    from ggro_integrations.errors import RewardModelError

    cases = [
        (
            ChatGGRO,
            {"entropy_treshold": 2.0},
            ConfigError,
            "has no option 'entropy_treshold'. Did you mean 'entropy_threshold'",
        ),
        (ChatGGRO, {"nudge_top_k": 0}, ConfigError, "nudge_top_k must be >= 1"),
        (GGROLLM, {"max_tokens": -3}, ConfigError, "max_new_tokens must be >= 1"),
        (ChatGGRO, {"entropy_threshold": "high"}, ConfigError, "entropy_threshold: Input should be a valid number"),
        (GGROLLM, {"strategy": "beam"}, ConfigError, "strategy: Input should be 'ggro', 'greedy' or 'best_of_n'"),
        (ChatGGRO, {"reward_model": "no-such-reward"}, RewardModelError, "unknown reward model 'no-such-reward'"),
    ]
    for cls, options, error, message in cases:
        with pytest.raises(error, match=message) as caught:
            cls(decoder=decoder, **options)
        assert not isinstance(caught.value, ValidationError), options


def test_per_call_options_and_bind(chat):
    events = chat.invoke(QUESTION, entropy_threshold=1.0).response_metadata["ggro_interventions"]
    assert events and {e["threshold"] for e in events} == {1.0}
    bound = chat.bind(entropy_threshold=1.2, max_tokens=4)
    message = bound.invoke(QUESTION)
    assert {e["threshold"] for e in message.response_metadata["ggro_interventions"]} <= {1.2}
    assert message.usage_metadata["output_tokens"] <= 4


def test_configurable_threshold_and_reward_model_per_call_without_reloads(decoder, registered):
    policy_loads = policy_load_count()
    chat = configurable_ggro(ChatGGRO(decoder=decoder, reward_model="tiny-a"))
    default = chat.invoke(QUESTION).response_metadata
    low = chat.with_config(configurable={"entropy_threshold": 0.2}).invoke(QUESTION).response_metadata
    other = chat.with_config(configurable={"reward_model": "tiny-b"}).invoke(QUESTION).response_metadata
    again = chat.with_config(configurable={"reward_model": "tiny-a"}).invoke(QUESTION).response_metadata
    assert {e["threshold"] for e in default["ggro_interventions"]} == {0.5}
    assert {e["threshold"] for e in low["ggro_interventions"]} == {0.2}
    assert len(low["ggro_interventions"]) >= len(default["ggro_interventions"])
    assert {e["reward_model"] for e in other["ggro_interventions"]} == {"tiny-b"}
    assert other["reward_model"] == "tiny-b" and again["reward_model"] == "tiny-a"
    assert other["reward"] != pytest.approx(again["reward"])  # a different reward model really scored it
    assert registered == {"tiny-a": 1, "tiny-b": 1}  # each reward built once, then served from the cache
    assert registry.reward_load_count("tiny-a") == registry.reward_load_count("tiny-b") == 1
    assert policy_load_count() == policy_loads


def test_all_knobs_configurable_with_a_prefix(decoder):
    chat = configurable_ggro(ChatGGRO(decoder=decoder), prefix="chat_")
    specs = {s.id for s in chat.config_specs}
    assert {"chat_" + name for name in CONFIGURABLE} <= specs
    message = chat.with_config(configurable={"chat_max_new_tokens": 3, "chat_strategy": "greedy"}).invoke(QUESTION)
    assert message.usage_metadata["output_tokens"] <= 3 and message.response_metadata["strategy"] == "greedy"
    with pytest.raises(ConfigError, match="not fields"):
        configurable_ggro(ChatGGRO(decoder=decoder), ["entropy"])


def test_from_model_id_loads_once_and_shares_models(tmp_path, registered):
    tokenizer, policy, _, _ = parts()
    policy.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    before = policy_load_count()
    chat = ChatGGRO.from_model_id(str(tmp_path), reward_model="tiny-a", entropy_threshold=0.5, max_new_tokens=6)
    llm = GGROLLM.from_model_id(str(tmp_path), reward_model="tiny-a", max_new_tokens=6)
    assert policy_load_count() == before + 1
    assert chat.decoder.model is llm.decoder.model
    assert chat.decoder.reward_model is llm.decoder.reward_model is parts()[2]
    assert chat._get_ls_params()["ls_model_name"] == str(tmp_path)
    message = chat.invoke(QUESTION)
    assert message.response_metadata["reward_model"] == "tiny-a" and message.usage_metadata["output_tokens"] <= 6
    assert isinstance(llm.invoke(QUESTION), str)
    assert registered["tiny-a"] == 1


def test_configurable_model_keeps_its_knobs_after_bind_tools(scripted):
    from langchain_core.tools import tool

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    decoder = scripted(lambda prompt: '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>')
    model = configurable_ggro(ChatGGRO(decoder=decoder)).bind_tools([add])
    message = model.with_config(configurable={"max_new_tokens": 3}).invoke("hi")
    assert message.usage_metadata["output_tokens"] == 3  # the knob reached the call
    assert "<tools>" in decoder.model.prompts[-1]  # and so did the tools
    assert [c["name"] for c in model.invoke("hi").tool_calls] == ["add"]


def test_device_and_dtype_accept_torch_objects(decoder):
    import torch

    chat = ChatGGRO(decoder=decoder, device=torch.device("cpu"), dtype=torch.float32)
    assert (chat.device, chat.dtype) == ("cpu", "float32")
    assert ChatGGRO(decoder=decoder, device="cpu", dtype="bfloat16").dtype == "bfloat16"
