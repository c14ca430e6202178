"""Composite rewards: weighted sums, per-component scores in events, weight validation."""

from __future__ import annotations

import math

import pytest
import torch

from ggro_integrations import GGRODecoder
from ggro_integrations.conversation import as_conversation
from ggro_integrations.errors import ConfigError, RewardModelError
from ggro_integrations.rewards import (
    CompositeReward,
    HFRewardModel,
    TextScorerReward,
    load_reward_model,
    register_reward_model,
    unregister_reward_model,
)
from ggro_integrations.rewards.formatting import template_parts
from ggro_integrations.testing import tiny_reward_model

CONVERSATION = as_conversation("Tell me about the water")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def parts(tokenizer, other_tokenizer):
    """Two rewards on the policy's vocabulary and one on another (cross-tokenizer) vocabulary."""
    safety = HFRewardModel(tiny_reward_model(tokenizer, seed=51), tokenizer, name="safety")
    helpful = HFRewardModel(tiny_reward_model(tokenizer, "qwen2", seed=52), tokenizer, name="helpful")
    foreign = HFRewardModel(tiny_reward_model(other_tokenizer, seed=53), other_tokenizer, name="foreign")
    return safety, helpful, foreign


def reference(reward: HFRewardModel, policy_tokenizer, ids) -> float:
    """transformers' forward on the formatted response: the policy's own ids when the vocabularies
    agree, otherwise its text re-encoded by the reward tokenizer."""
    before, after = template_parts(reward.tokenizer, CONVERSATION)
    if reward.tokenizer is policy_tokenizer:
        response = list(ids)
    else:
        text = policy_tokenizer.decode(list(ids), skip_special_tokens=True)
        response = reward.tokenizer.encode(text, add_special_tokens=False)
    row = before + response + after
    with torch.no_grad():
        return reward.model(input_ids=torch.tensor([row])).logits[0, 0].item()


def test_scores_are_the_weighted_sum_of_components(parts, tokenizer):
    safety, helpful, foreign = parts
    composite = CompositeReward([(safety, 1.0), (helpful, 0.5), (foreign, 2.0)])
    assert composite.component_names == ["safety", "helpful", "foreign"]
    session = composite.session(CONVERSATION, tokenizer)
    prefix = tokenizer.encode("The water", add_special_tokens=False)
    rows = [tokenizer.encode(t, add_special_tokens=False) for t in [" is cold", " is very blue", "!"]]
    scores = session.score(prefix, rows)
    for i, row in enumerate(rows):
        parts_ref = {m.name: reference(m, tokenizer, prefix + row) for m in (safety, helpful, foreign)}
        total, components = scores.row(i)
        assert components == pytest.approx(parts_ref, abs=1e-5)
        expected = parts_ref["safety"] + 0.5 * parts_ref["helpful"] + 2.0 * parts_ref["foreign"]
        assert total == pytest.approx(expected, abs=1e-5)
    # Usage adds up the components' work.
    assert session.usage.sequences_scored == 3 * len(rows)


def test_gradient_and_exact_gains_are_weighted_sums(parts, tokenizer):
    weights = [0.7, 1.3, 0.4]
    composite = CompositeReward(list(zip(parts, weights)))
    prefix = tokenizer.encode("The water", add_special_tokens=False)
    continuation = tokenizer.encode(" is cold and", add_special_tokens=False)
    candidates = list(range(260, 300))
    session = composite.session(CONVERSATION, tokenizer)
    own = [m.session(CONVERSATION, tokenizer) for m in parts]
    for method in ("gradient_gains", "exact_gains"):
        got = getattr(session, method)(prefix, continuation, candidates)
        expected = sum(w * getattr(s, method)(prefix, continuation, candidates) for w, s in zip(weights, own))
        assert torch.allclose(got, expected, atol=1e-5), method


def test_combined_score_and_gains_are_weighted_sums(parts, tokenizer):
    weights = [0.7, 1.3, 0.4]
    composite = CompositeReward(list(zip(parts, weights)))
    prefix = tokenizer.encode("The water", add_special_tokens=False)
    continuation = tokenizer.encode(" is cold and", add_special_tokens=False)
    candidates = list(range(260, 300))
    scores, gains = composite.session(CONVERSATION, tokenizer).score_and_gradient_gains(
        prefix, continuation, candidates
    )
    expected = {m.name: reference(m, tokenizer, prefix + continuation) for m in parts}
    assert scores.row(0)[1] == pytest.approx(expected, abs=1e-5)
    assert scores.row(0)[0] == pytest.approx(sum(w * expected[m.name] for m, w in zip(parts, weights)), abs=1e-5)
    own = [m.session(CONVERSATION, tokenizer) for m in parts]
    separate = sum(w * s.gradient_gains(prefix, continuation, candidates) for w, s in zip(weights, own))
    assert torch.allclose(gains, separate, atol=1e-5)


@pytest.mark.parametrize("scoring", ["gradient", "exact"])
def test_events_carry_every_component(parts, tokenizer, policy, scoring):
    safety, helpful, _ = parts
    register_reward_model("composite-test-safety", lambda **kw: safety, overwrite=True)
    register_reward_model("composite-test-helpful", lambda **kw: helpful, overwrite=True)
    try:
        decoder = GGRODecoder(policy, tokenizer, None, entropy_threshold=0.5, num_refinements=2, max_new_tokens=12)
        spec = {"composite-test-safety": 1.0, "composite-test-helpful": 0.5}
        result = decoder.generate(CONVERSATION, reward_model=spec, nudge_scoring=scoring)
    finally:
        unregister_reward_model("composite-test-safety")
        unregister_reward_model("composite-test-helpful")
    names = ["composite-test-safety", "composite-test-helpful"]
    assert result.interventions, "the test must exercise triggers"
    for event in result.interventions:
        assert list(event.base_reward_components) == names
        assert list(event.best_reward_components) == names
        c = event.best_reward_components
        assert event.best_reward == pytest.approx(c[names[0]] + 0.5 * c[names[1]], abs=1e-5)
        for trial in event.candidates:
            assert trial.reward == pytest.approx(
                trial.reward_components[names[0]] + 0.5 * trial.reward_components[names[1]], abs=1e-5
            )
        assert event.to_dict()["best_reward_components"] == c
    final = {n: reference(m, tokenizer, result.token_ids) for n, m in zip(names, (safety, helpful))}
    assert result.reward_components == pytest.approx(final, abs=1e-4)


def test_gradient_free_component_needs_exact_scoring(parts, tokenizer, policy):
    safety = parts[0]
    lengthy = TextScorerReward(lambda prompt, responses: [len(r) / 10 for r in responses], name="length")
    composite = CompositeReward([(safety, 1.0), (lengthy, 0.2)])
    assert not composite.supports_gradient
    decoder = GGRODecoder(policy, tokenizer, composite, entropy_threshold=0.5, num_refinements=2, max_new_tokens=10)
    with pytest.raises(ConfigError, match="nudge_scoring='exact'"):
        decoder.generate("Hello there")
    result = decoder.generate("Hello there", nudge_scoring="exact")
    text = tokenizer.decode(result.token_ids, skip_special_tokens=True)
    assert result.reward_components["length"] == pytest.approx(len(text) / 10, abs=1e-5)


@pytest.mark.parametrize(
    ("weight", "message"),
    [
        (-0.5, "negative"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        ("1.0", "must be a number"),
        (True, "must be a number"),
    ],
)
def test_bad_weights_are_rejected(parts, weight, message):
    with pytest.raises(RewardModelError, match=message):
        CompositeReward([(parts[0], 1.0), (parts[1], weight)])


def test_negative_weight_needs_explicit_opt_in(parts, tokenizer):
    safety, helpful, _ = parts
    composite = CompositeReward([(safety, 1.0), (helpful, -0.5)], allow_negative=True)
    ids = tokenizer.encode(" cold", add_special_tokens=False)
    total, c = composite.session(CONVERSATION, tokenizer).score([], [ids]).row(0)
    assert total == pytest.approx(c["safety"] - 0.5 * c["helpful"], abs=1e-6)


def test_negative_weight_in_a_mapping_fails_before_loading(tokenizer):
    calls = []
    register_reward_model("never-loaded", lambda **kw: calls.append(kw) or None, overwrite=True)
    try:
        with pytest.raises(RewardModelError, match="allow_negative=True"):
            load_reward_model({"never-loaded": -1.0})
        with pytest.raises(RewardModelError, match="'second' must be finite"):
            CompositeReward([("never-loaded", 1.0, "first"), ("never-loaded", math.nan, "second")])
        assert calls == []
    finally:
        unregister_reward_model("never-loaded")


def test_structural_errors(parts):
    safety, helpful, _ = parts
    with pytest.raises(RewardModelError, match="at least one"):
        CompositeReward([])
    with pytest.raises(RewardModelError, match="all composite weights are zero"):
        CompositeReward([(safety, 0.0), (helpful, 0)])
    with pytest.raises(RewardModelError, match="distinct names"):
        CompositeReward([(safety, 1.0), (safety, 2.0)])
    with pytest.raises(RewardModelError, match=r"\(reward_model, weight\[, name\]\)"):
        CompositeReward([safety])
    assert CompositeReward([(safety, 1.0, "a"), (safety, 2.0, "b")]).component_names == ["a", "b"]
