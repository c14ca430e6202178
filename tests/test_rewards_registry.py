"""Choosing reward models by name, path, instance or mapping; caching; clear errors."""

from __future__ import annotations

import threading
import uuid

import pytest
import torch

from ggro_integrations import GGRODecoder
from ggro_integrations.conversation import as_conversation
from ggro_integrations.errors import RewardModelError
from ggro_integrations.rewards import (
    CompositeReward,
    HFRewardModel,
    RewardModel,
    clear_reward_cache,
    list_reward_models,
    load_reward_model,
    register_reward_model,
    reward_load_count,
    unregister_reward_model,
)
from ggro_integrations.rewards.formatting import template_parts
from ggro_integrations.testing import tiny_reward_model

PROMPT = "Tell me about the water"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def names(tokenizer):
    """Two freshly registered tiny reward models; each factory records its calls."""
    clear_reward_cache()
    calls: dict[str, list[dict]] = {}
    registered = []
    for seed in (21, 22):
        name = f"tiny-{seed}-{uuid.uuid4().hex[:6]}"
        calls[name] = []

        def factory(_name=name, _seed=seed, **kwargs):
            calls[_name].append(kwargs)
            return HFRewardModel(tiny_reward_model(tokenizer, seed=_seed), tokenizer, name=_name)

        register_reward_model(name, factory)
        registered.append(name)
    yield registered, calls
    for name in registered:
        unregister_reward_model(name)
    clear_reward_cache()


def forward_reward(model, tokenizer, text):
    """Independent reference: transformers' own forward on the reward-formatted conversation."""
    before, after = template_parts(tokenizer, as_conversation(PROMPT))
    ids = before + tokenizer.encode(text, add_special_tokens=False) + after
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, 0].item()


def test_builtin_names_are_listed():
    listed = list_reward_models()
    assert "default" in listed
    assert listed == sorted(listed)


def test_registered_name_resolves_and_is_cached(names):
    (a, _), calls = names
    model = load_reward_model(a)
    assert isinstance(model, HFRewardModel) and model.name == a
    assert load_reward_model(a) is model
    assert len(calls[a]) == 1
    assert calls[a][0] == {"device": None, "dtype": None, "trust_remote_code": False}


def test_switching_names_in_a_loop_loads_each_once(names):
    (a, b), calls = names
    seen = {a: set(), b: set()}
    for _ in range(5):
        for name in (a, b):
            seen[name].add(id(load_reward_model(name)))
    assert {k: len(v) for k, v in seen.items()} == {a: 1, b: 1}
    assert reward_load_count(a) == reward_load_count(b) == 1
    assert len(calls[a]) == len(calls[b]) == 1


def test_device_and_dtype_are_part_of_the_cache_key(names):
    (a, _), calls = names
    plain = load_reward_model(a)
    doubled = load_reward_model(a, dtype="float64")
    assert doubled is not plain
    assert calls[a][1]["dtype"] is torch.float64  # strings are normalised before the factory sees them
    assert load_reward_model(a, dtype=torch.float64) is doubled
    assert load_reward_model(a, device="cpu") is load_reward_model(a, device=torch.device("cpu"))
    assert reward_load_count(a) == 3


def test_concurrent_loads_build_once(names):
    (a, _), calls = names
    results = []
    threads = [threading.Thread(target=lambda: results.append(load_reward_model(a))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls[a]) == 1 and len({id(r) for r in results}) == 1


def test_instance_is_returned_unchanged(tokenizer, reward_hf_model):
    reward = HFRewardModel(reward_hf_model, tokenizer)
    assert load_reward_model(reward) is reward


def test_local_path_resolves_scores_and_caches(tmp_path, tokenizer):
    model = tiny_reward_model(tokenizer, seed=31)
    model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    assert any(p.suffix == ".safetensors" for p in (tmp_path / "rm").iterdir())
    clear_reward_cache()
    loaded = load_reward_model(str(tmp_path / "rm"))
    assert isinstance(loaded, HFRewardModel)
    assert load_reward_model(str(tmp_path / "rm")) is loaded
    assert reward_load_count() == 1
    text = " The water is cold and blue."
    got = loaded.score_texts(PROMPT, [text], tokenizer)[0]
    assert got == pytest.approx(forward_reward(model, tokenizer, text), abs=1e-5)


def test_mapping_resolves_to_a_cached_composite(names, tokenizer):
    (a, b), calls = names
    composite = load_reward_model({a: 1.0, b: 0.5})
    assert isinstance(composite, CompositeReward)
    assert composite.component_names == [a, b]
    assert load_reward_model({a: 1.0, b: 0.5}) is composite
    assert load_reward_model(a) is composite.models[0]  # components come from the same cache
    assert len(calls[a]) == len(calls[b]) == 1
    text = " The water is cold."
    expected = sum(w * forward_reward(m.model, tokenizer, text) for m, w in zip(composite.models, composite.weights))
    assert composite.score_texts(PROMPT, [text], tokenizer)[0] == pytest.approx(expected, abs=1e-5)


def test_unknown_name_lists_registered_names(names):
    (a, b), _ = names
    with pytest.raises(RewardModelError) as info:
        load_reward_model("no-such-reward")
    message = str(info.value)
    assert "no-such-reward" in message and a in message and b in message and "'default'" in message


@pytest.mark.parametrize("path", ["./missing/reward-model", "/definitely/not/here", "~/no/such/rm"])
def test_nonexistent_path_is_a_clear_error(path):
    with pytest.raises(RewardModelError, match="does not exist"):
        load_reward_model(path)


def test_unreachable_hub_id_is_a_clear_error():
    # HF_HUB_OFFLINE=1 (conftest): a hub id that is not in the local cache cannot load.
    with pytest.raises(RewardModelError, match="could not load reward model 'nonexistent-org/no-such-rm'"):
        load_reward_model("nonexistent-org/no-such-rm")


def test_bad_spec_types_and_factories(names):
    with pytest.raises(RewardModelError, match="must be a name"):
        load_reward_model(3.5)
    with pytest.raises(RewardModelError, match="mapping is empty"):
        load_reward_model({})
    register_reward_model("returns-a-string", lambda **kw: "not a model")
    try:
        with pytest.raises(RewardModelError, match="returned str, not a RewardModel"):
            load_reward_model("returns-a-string")
    finally:
        unregister_reward_model("returns-a-string")


def test_duplicate_registration_needs_overwrite(names, tokenizer):
    (a, _), _ = names
    old = load_reward_model(a)
    replacement = HFRewardModel(tiny_reward_model(tokenizer, seed=40), tokenizer, name="replacement")
    with pytest.raises(RewardModelError, match="already registered"):
        register_reward_model(a, lambda **kw: replacement)
    register_reward_model(a, lambda **kw: replacement, overwrite=True)
    assert load_reward_model(a) is replacement and replacement is not old


def test_several_labels_are_rejected(tmp_path, tokenizer):
    from transformers import AutoModelForSequenceClassification

    config = tiny_reward_model(tokenizer).config
    config.num_labels = 3
    model = AutoModelForSequenceClassification.from_config(config)
    with pytest.raises(RewardModelError, match="3 output labels"):
        HFRewardModel(model, tokenizer)
    model.save_pretrained(tmp_path / "three")
    tokenizer.save_pretrained(tmp_path / "three")
    with pytest.raises(RewardModelError, match="num_labels=1"):
        load_reward_model(str(tmp_path / "three"))


def test_decoder_switches_reward_by_name_per_call(names, tokenizer, policy):
    (a, b), calls = names
    decoder = GGRODecoder(policy, tokenizer, a, entropy_threshold=0.5, num_refinements=1, max_new_tokens=8)
    for _ in range(3):
        for name in (a, b):
            result = decoder.generate("Hello there", reward_model=name)
            assert result.reward_model == name
            assert result.interventions and all(e.reward_model == name for e in result.interventions)
            assert result.reward == pytest.approx(
                forward_reward_for(load_reward_model(name), tokenizer, "Hello there", result.token_ids), abs=1e-4
            )
    assert len(calls[a]) == len(calls[b]) == 1


def forward_reward_for(reward: RewardModel, tokenizer, prompt, token_ids):
    before, after = template_parts(tokenizer, as_conversation(prompt))
    with torch.no_grad():
        return reward.model(input_ids=torch.tensor([before + list(token_ids) + after])).logits[0, 0].item()


def test_aliases_share_one_cache_entry(tokenizer):
    built = []

    def factory(**kwargs):
        built.append(kwargs)
        return HFRewardModel(tiny_reward_model(tokenizer, seed=41), tokenizer, name="aliased")

    register_reward_model("alias-one", factory, overwrite=True)
    register_reward_model("alias-two", factory, overwrite=True)
    try:
        assert load_reward_model("alias-one") is load_reward_model("alias-two")
        assert len(built) == 1
    finally:
        unregister_reward_model("alias-one")
        unregister_reward_model("alias-two")


def test_mapping_keys_may_be_instances(tokenizer, reward_hf_model):
    reward = HFRewardModel(reward_hf_model, tokenizer, name="inline")
    composite = load_reward_model({reward: 2.0})
    assert composite.models == [reward] and composite.component_names == ["inline"]
    assert load_reward_model({reward: 2.0}) is composite
    ids = tokenizer.encode(" cold", add_special_tokens=False)
    total, parts = composite.session(as_conversation(PROMPT), tokenizer).score([], [ids]).row(0)
    assert total == pytest.approx(2.0 * parts["inline"])
