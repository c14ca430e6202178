"""Custom text scorers (exact scoring only) and their bad outputs; differentiable custom rewards."""

from __future__ import annotations

import math

import pytest
import torch

from ggro_integrations import GGRODecoder
from ggro_integrations.conversation import as_conversation
from ggro_integrations.errors import ConfigError, RewardModelError
from ggro_integrations.rewards import EmbeddingReward, TextScorerReward, load_reward_model

CONVERSATION = as_conversation("Tell me about the water")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def vowel_share(prompt, responses):
    return [sum(ch in "aeiou" for ch in r) / (1 + len(r)) for r in responses]


def test_scores_are_the_callable_applied_to_decoded_text(tokenizer):
    seen = []

    def scorer(prompt, responses):
        seen.append((prompt, list(responses)))
        return vowel_share(prompt, responses)

    reward = TextScorerReward(scorer, name="vowels")
    assert not reward.supports_gradient and load_reward_model(reward) is reward
    session = reward.session(CONVERSATION, tokenizer)
    prefix = tokenizer.encode("The water", add_special_tokens=False)
    rows = [tokenizer.encode(t, add_special_tokens=False) for t in [" is cold", " is a blue sea"]]
    values = session.score(prefix, rows).values
    texts = ["The water is cold", "The water is a blue sea"]
    assert seen == [("Tell me about the water", texts)]
    assert values.tolist() == pytest.approx(vowel_share(None, texts))
    exact = session.exact_gains(prefix, rows[1], [tokenizer.encode(" was", add_special_tokens=False)[0]])
    assert exact.shape == (1,)


def test_messages_prompt_format(tokenizer):
    seen = []
    reward = TextScorerReward(lambda p, r: seen.append(p) or [0.0] * len(r), prompt_format="messages")
    reward.session(CONVERSATION, tokenizer).score([], [[5]])
    assert seen == [[{"role": "user", "content": "Tell me about the water"}]]


def test_decoder_demands_exact_scoring_then_steers(tokenizer, policy):
    reward = TextScorerReward(vowel_share, name="vowels")
    decoder = GGRODecoder(policy, tokenizer, reward, entropy_threshold=0.5, num_refinements=3, max_new_tokens=12)
    with pytest.raises(ConfigError, match="nudge_scoring='exact'"):
        decoder.generate("Hello there")
    result = decoder.generate("Hello there", nudge_scoring="exact")
    assert result.interventions
    assert result.reward == pytest.approx(vowel_share(None, [result.text])[0], abs=1e-6)
    for event in result.interventions:
        # The accepted segment is the best measured one, the unmodified segment included.
        assert event.best_reward >= event.base_reward


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (lambda n: [math.nan] * n, "non-finite"),
        (lambda n: [1.0, math.inf] + [0.0] * (n - 2), r"non-finite scores \(NaN or inf\) for rows \[1\]"),
        (lambda n: [0.0] * (n + 1), r"expected shape \[3\], got \[4\]"),
        (lambda n: 1.0, r"expected shape \[3\], got \[\]"),
        (lambda n: ["high"] * n, "not numbers"),
        (lambda n: [[0.0, 1.0]] * n, r"expected shape \[3\]"),
    ],
)
def test_bad_scorer_outputs_are_clear_errors(tokenizer, output, message):
    reward = TextScorerReward(lambda prompt, responses: output(len(responses)), name="broken")
    session = reward.session(CONVERSATION, tokenizer)
    with pytest.raises(RewardModelError, match=message) as info:
        session.score([], [[40], [41], [42]])
    assert "'broken'" in str(info.value)


def test_scorer_exceptions_name_the_scorer(tokenizer):
    def explode(prompt, responses):
        raise KeyError("missing")

    session = TextScorerReward(explode).session(CONVERSATION, tokenizer)
    with pytest.raises(RewardModelError, match="reward scorer 'explode' raised KeyError"):
        session.score([], [[40]])


def test_constructor_validation():
    with pytest.raises(RewardModelError, match="must be callable"):
        TextScorerReward("not callable")
    with pytest.raises(RewardModelError, match="prompt_format"):
        TextScorerReward(vowel_share, prompt_format="json")


def test_differentiable_module_steers_with_gradients(tokenizer, policy):
    # A reward that is linear in token embeddings: exact and gradient gains coincide.
    generator = torch.Generator().manual_seed(3)
    table = torch.randn(len(tokenizer), 4, generator=generator)
    reward = EmbeddingReward(lambda e, m: (e[..., 0] * m).sum(-1), table, tokenizer, name="bag")
    decoder = GGRODecoder(policy, tokenizer, reward, entropy_threshold=0.5, num_refinements=2, max_new_tokens=12)
    result = decoder.generate("Hello there")
    assert result.interventions and result.stats.reward_backward_passes > 0
    tried = [e for e in result.interventions if len(e.candidates) > 1]
    assert tried, "the test must try nudges"
    for event in tried:
        # The first nudge's gain is relative to the unmodified segment: for a reward linear in the
        # embeddings it is exactly table[v] - table[original].
        first = event.candidates[1]
        expected = float(table[first.token_id, 0] - table[event.original_token_id, 0])
        assert first.predicted_gain == pytest.approx(expected, abs=1e-5)
        assert event.best_reward >= event.base_reward
