"""The shared-vocabulary reward path against independent computations."""

import pytest
import torch

from ggro_integrations.conversation import as_conversation
from ggro_integrations.rewards import EmbeddingReward, HFRewardModel
from ggro_integrations.rewards.formatting import template_parts
from ggro_integrations.testing import tiny_reward_model

CONVERSATION = as_conversation("Tell me about the water")


def full_sequence(tokenizer, prefix, continuation):
    before, after = template_parts(tokenizer, CONVERSATION)
    return before + list(prefix) + list(continuation) + after, len(before) + len(prefix)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_cached_scores_equal_transformers_forward(tokenizer, arch):
    model = tiny_reward_model(tokenizer, arch, seed=11)
    session = HFRewardModel(model, tokenizer).session(CONVERSATION, tokenizer)
    prefix = tokenizer.encode("The water is", add_special_tokens=False)
    continuations = [tokenizer.encode(t, add_special_tokens=False) for t in [" cold", " very blue and deep", ""]]
    # Twice, with a longer prefix in between: exercises extending and cropping the prefix cache.
    for pre in (prefix, prefix + continuations[0], prefix):
        scores = session.score(pre, continuations).values
        for i, cont in enumerate(continuations):
            ids, _ = full_sequence(tokenizer, pre, cont)
            expected = model(input_ids=torch.tensor([ids])).logits[0, 0]
            assert scores[i].item() == pytest.approx(expected.item(), abs=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_gradient_gains_match_finite_differences(tokenizer, arch):
    model = tiny_reward_model(tokenizer, arch, seed=12).double()
    session = HFRewardModel(model, tokenizer).session(CONVERSATION, tokenizer)
    prefix = tokenizer.encode("The water", add_special_tokens=False)
    continuation = tokenizer.encode(" is cold and", add_special_tokens=False)
    candidates = list(range(10, 40))
    gains = session.gradient_gains(prefix, continuation, candidates)

    ids, position = full_sequence(tokenizer, prefix, continuation)
    weight = model.get_input_embeddings().weight
    base = weight[torch.tensor(ids)]

    def reward(embeds):  # transformers' own forward and pooling (last position, no padding)
        return model(inputs_embeds=embeds[None]).logits[0, 0].item()

    # Llama's RMSNorm computes in float32 even in a float64 model, so a tiny step drowns in rounding;
    # a moderate central-difference step keeps both rounding and curvature error near 1%.
    eps = 3e-2
    for v, gain in zip(candidates, gains.tolist()):
        direction = weight[v] - weight[continuation[0]]
        plus, minus = base.clone(), base.clone()
        plus[position] += eps * direction
        minus[position] -= eps * direction
        numeric = (reward(plus) - reward(minus)) / (2 * eps)
        assert gain == pytest.approx(numeric, rel=2e-2, abs=2e-5)


def bag_reward(tokenizer, weights_by_token):
    """Reward = sum over the conversation of w[token]: linear in the token embeddings."""
    dim = 4
    table = torch.zeros(len(tokenizer), dim)
    for token, w in weights_by_token.items():
        table[token, 0] = w
    return EmbeddingReward(lambda e, m: (e[..., 0] * m).sum(-1), table, tokenizer, name="bag")


def test_linear_reward_gains_equal_exact_swaps(tokenizer):
    generator = torch.Generator().manual_seed(0)
    weights = {t: float(w) for t, w in enumerate(torch.randn(len(tokenizer), generator=generator))}
    session = bag_reward(tokenizer, weights).session(CONVERSATION, tokenizer)
    prefix = tokenizer.encode("Hello", add_special_tokens=False)
    continuation = tokenizer.encode(" there friend", add_special_tokens=False)
    candidates = list(range(5, 60))
    predicted = session.gradient_gains(prefix, continuation, candidates)
    exact = session.exact_gains(prefix, continuation, candidates)
    expected = torch.tensor([weights[v] - weights[continuation[0]] for v in candidates])
    torch.testing.assert_close(predicted, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(exact, expected, atol=1e-5, rtol=1e-5)


def test_hf_exact_gains_equal_rescoring(tokenizer, reward_hf_model):
    session = HFRewardModel(reward_hf_model, tokenizer).session(CONVERSATION, tokenizer)
    prefix = tokenizer.encode("Yes", add_special_tokens=False)
    continuation = tokenizer.encode(" the light", add_special_tokens=False)
    candidates = [20, 30, 40]
    exact = session.exact_gains(prefix, continuation, candidates)
    base = session.score(prefix, [continuation]).values[0]
    for v, gain in zip(candidates, exact.tolist()):
        swapped = session.score(prefix, [[v] + continuation[1:]]).values[0]
        assert gain == pytest.approx((swapped - base).item(), abs=1e-5)


def test_one_pass_score_and_gains_equal_separate_calls(tokenizer, reward_hf_model):
    session = HFRewardModel(reward_hf_model, tokenizer).session(CONVERSATION, tokenizer)
    prefix = tokenizer.encode("The", add_special_tokens=False)
    continuation = tokenizer.encode(" water is deep", add_special_tokens=False)
    candidates = list(range(30, 50))
    scores, gains = session.score_and_gradient_gains(prefix, continuation, candidates)
    assert scores.values[0].item() == pytest.approx(session.score(prefix, [continuation]).values[0].item(), abs=1e-5)
    torch.testing.assert_close(gains, session.gradient_gains(prefix, continuation, candidates))
