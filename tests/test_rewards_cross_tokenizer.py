"""Reward models over another vocabulary: detection, scoring, gradient estimates vs exact swaps.

Run this file as a script to print the agreement rates quoted in docs/reward-models.md:

    OMP_NUM_THREADS=1 .venv/bin/python tests/test_rewards_cross_tokenizer.py
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

from ggro_integrations import GGRODecoder
from ggro_integrations.conversation import as_conversation
from ggro_integrations.rewards import HFRewardModel, shares_vocabulary
from ggro_integrations.rewards.cross_tokenizer import CrossTokenizerSession
from ggro_integrations.rewards.formatting import template_parts
from ggro_integrations.rewards.hf import SharedVocabSession
from ggro_integrations.testing import (
    permuted_tokenizer,
    sample_corpus,
    tiny_causal_lm,
    tiny_reward_model,
    tiny_tokenizer,
)

CONVERSATION = as_conversation("Tell me about the water")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reference(model, reward_tokenizer, policy_tokenizer, conversation, ids) -> float:
    """transformers' forward on the policy response's text, formatted and tokenized by the reward side."""
    text = policy_tokenizer.decode(list(ids), skip_special_tokens=True)
    before, after = template_parts(reward_tokenizer, conversation)
    row = before + reward_tokenizer.encode(text, add_special_tokens=False) + after
    with torch.no_grad():
        return model(input_ids=torch.tensor([row])).logits[0, 0].item()


def planted_reward(tokenizer, seed: int = 5):
    """A one-layer Llama classifier whose reward is the mean of a planted value s(token) over the
    conversation's tokens.

    Queries and keys are zero, so attention is a uniform causal mean; every embedding has RMS 1,
    so the input RMSNorm leaves it unchanged; the value projection reads s from dimension 1 and
    the output projection writes the mean into dimension 0, which the score head reads. Template
    tokens carry s = 0 so the response's tokens decide the reward. The best swap is then a
    property of the reward tokens the candidate's text turns into: an estimator that maps policy
    candidates onto the wrong reward tokens ranks at chance.
    """
    model = tiny_reward_model(tokenizer, "llama", seed=seed, layers=1)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        table = model.get_input_embeddings().weight
        dim = table.shape[1]
        values = torch.randn(table.shape[0], generator=generator)
        values[tokenizer.all_special_ids] = 0.0
        values[tokenizer.convert_tokens_to_ids("Ċ")] = 0.0  # the template's newline
        rest = torch.randn(table.shape[0], dim - 2, generator=generator)
        rest *= ((dim - values**2) / rest.pow(2).sum(-1)).sqrt()[:, None]
        table.zero_()
        table[:, 1], table[:, 2:] = values, rest
        layer = model.model.layers[0]
        attention = layer.self_attn
        for proj in (attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj, layer.mlp.down_proj):
            proj.weight.zero_()
        attention.v_proj.weight[0, 1] = 1.0
        attention.o_proj.weight[0, 0] = 1.0
        model.score.weight.zero_()
        model.score.weight[0, 0] = 1.0
    return model


def _text_tokens(tokenizer) -> list[bool]:
    """Tokens that decode to printable text on their own. A trained policy's top-K are word
    pieces; a tiny random one puts raw bytes there, which decode to U+FFFD."""
    special = set(tokenizer.all_special_ids)
    out = []
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i])
        out.append(i not in special and bool(text.strip()) and text.isprintable() and "\ufffd" not in text)
    return out


def gain_pairs(reward: HFRewardModel, policy, policy_tokenizer, *, lines: int, k: int = 10):
    """``(predicted, exact)`` gains of the policy's top-``k`` text tokens at every position of
    ``lines`` corpus responses (each position treated as a trigger)."""
    corpus = sample_corpus(123, 2 * lines)
    usable = _text_tokens(policy_tokenizer)
    pairs = []
    for response_text, prompt_text in zip(corpus[:lines], corpus[lines:]):
        conversation = as_conversation(prompt_text)
        session = reward.session(conversation, policy_tokenizer)
        response = policy_tokenizer.encode(response_text, add_special_tokens=False)
        prompt = policy_tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        prompt_ids = policy_tokenizer.encode(prompt, add_special_tokens=False)
        with torch.no_grad():
            logits = policy(torch.tensor([prompt_ids + response])).logits[0]
        for t in range(len(response)):
            order = logits[len(prompt_ids) - 1 + t].topk(200).indices.tolist()
            candidates = [c for c in order if c != response[t] and usable[c]][:k]
            predicted = session.gradient_gains(response[:t], response[t:], candidates)
            exact = session.exact_gains(response[:t], response[t:], candidates)
            pairs.append((predicted, exact))
    return pairs


def top1_agreement(pairs, *, shuffle: bool = False) -> float:
    """Share of positions where the estimate's best swap is exact mode's best. ``shuffle`` pairs
    each candidate with another's estimate: a control that must land near chance (1/k)."""
    generator = torch.Generator().manual_seed(0)
    hits = 0
    for predicted, exact in pairs:
        if shuffle:
            predicted = predicted[torch.randperm(len(predicted), generator=generator)]
        hits += int(predicted.argmax() == exact.argmax())
    return hits / len(pairs)


# -- vocabulary detection -----------------------------------------------------------


def swap_the_water(tokenizer):
    """The tokenizer with the ids of " the" and " water" swapped (both occur in the prompts here)."""
    return permuted_tokenizer(tokenizer, *tokenizer.convert_tokens_to_ids(["Ġthe", "Ġwater"]))


def test_identical_tokenizers_share_a_vocabulary(tokenizer):
    assert shares_vocabulary(tokenizer, tokenizer)
    assert shares_vocabulary(tokenizer, tiny_tokenizer())  # built again, same vocabulary


def test_one_permuted_id_is_not_shared(tokenizer, other_tokenizer):
    permuted = swap_the_water(tokenizer)
    assert len(permuted) == len(tokenizer)
    assert not shares_vocabulary(tokenizer, permuted)
    assert not shares_vocabulary(tokenizer, other_tokenizer)


def test_session_kind_follows_the_vocabulary(tokenizer, other_tokenizer, reward_hf_model):
    reward = HFRewardModel(reward_hf_model, tokenizer)
    assert type(reward.session(CONVERSATION, tokenizer)) is SharedVocabSession
    permuted = swap_the_water(tokenizer)
    assert isinstance(reward.session(CONVERSATION, permuted), CrossTokenizerSession)
    assert isinstance(reward.session(CONVERSATION, other_tokenizer), CrossTokenizerSession)


# -- scoring --------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_cross_scores_equal_transformers_forward(tokenizer, other_tokenizer, arch):
    model = tiny_reward_model(other_tokenizer, arch, seed=61)
    session = HFRewardModel(model, other_tokenizer).session(CONVERSATION, tokenizer)
    prefix = tokenizer.encode("The water is", add_special_tokens=False)
    continuations = [tokenizer.encode(t, add_special_tokens=False) for t in [" cold", "n't blue and deep", "!"]]
    # A longer prefix in between exercises extending and cropping the reward-side prefix cache.
    for pre in (prefix, prefix + continuations[0], prefix):
        scores = session.score(pre, continuations).values
        for i, cont in enumerate(continuations):
            expected = reference(model, other_tokenizer, tokenizer, CONVERSATION, pre + cont)
            assert scores[i].item() == pytest.approx(expected, abs=1e-5)


def test_combined_score_and_gains_match_separate_calls(tokenizer, other_tokenizer):
    """The decoder may ask for the reward and the gains in one pass: same numbers, in reward ids."""
    model = tiny_reward_model(other_tokenizer, "qwen2", seed=65)
    session = HFRewardModel(model, other_tokenizer).session(CONVERSATION, tokenizer)
    prefix = tokenizer.encode("The water", add_special_tokens=False)
    continuation = tokenizer.encode(" is cold and", add_special_tokens=False)
    candidates = list(range(260, 300))
    scores, gains = session.score_and_gradient_gains(prefix, continuation, candidates)
    expected = reference(model, other_tokenizer, tokenizer, CONVERSATION, prefix + continuation)
    assert scores.values.shape == (1,) and scores.values[0].item() == pytest.approx(expected, abs=1e-5)
    assert torch.allclose(gains, session.gradient_gains(prefix, continuation, candidates), atol=1e-6)


def test_one_for_one_swaps_match_finite_differences(tokenizer, other_tokenizer):
    """Where a swap changes exactly one reward token, the estimate is the exact first-order term."""
    model = tiny_reward_model(other_tokenizer, "llama", seed=62).double()
    session = HFRewardModel(model, other_tokenizer).session(CONVERSATION, tokenizer)
    prefix = tokenizer.encode("The", add_special_tokens=False)
    continuation = tokenizer.encode(" water is cold", add_special_tokens=False)  # " water": one token on both sides
    text = tokenizer.decode(prefix + continuation)
    original = other_tokenizer.encode(text, add_special_tokens=False)
    before, after = template_parts(other_tokenizer, CONVERSATION)
    weight = model.get_input_embeddings().weight
    base = weight[torch.tensor(before + original + after)]
    checked = 0
    candidates = list(range(len(tokenizer)))
    gains = session.gradient_gains(prefix, continuation, candidates)
    for v, gain in zip(candidates, gains.tolist()):
        swapped_text = tokenizer.decode(prefix + [v] + continuation[1:], skip_special_tokens=True)
        swapped = other_tokenizer.encode(swapped_text, add_special_tokens=False)
        diff = [i for i, (a, b) in enumerate(zip(original, swapped)) if a != b]
        if len(swapped) != len(original) or len(diff) != 1:
            continue
        position = len(before) + diff[0]
        direction = weight[swapped[diff[0]]] - weight[original[diff[0]]]
        eps = 3e-2  # see test_reward_gradients.py: Llama's RMSNorm rounds in float32
        plus, minus = base.clone(), base.clone()
        plus[position] += eps * direction
        minus[position] -= eps * direction
        with torch.no_grad():
            numeric = (model(inputs_embeds=plus[None]).logits - model(inputs_embeds=minus[None]).logits).item()
        assert gain == pytest.approx(numeric / (2 * eps), rel=2e-2, abs=2e-5)
        checked += 1
        if checked == 25:
            break
    assert checked >= 20, "too few one-for-one swaps to test"


def test_planted_reward_gradient_ranks_the_best_swap_first(tokenizer, other_tokenizer, policy):
    reward = HFRewardModel(planted_reward(other_tokenizer), other_tokenizer)
    pairs = gain_pairs(reward, policy, tokenizer, lines=6)
    rate, control = top1_agreement(pairs), top1_agreement(pairs, shuffle=True)
    assert len(pairs) >= 60
    # Measured 0.86 here (0.88 on 392 positions, where the shared-vocabulary path also gets 0.88);
    # chance is 1/10.
    assert rate >= 0.75, rate
    assert control <= 0.3, control


# -- end to end -------------------------------------------------------------------------


@pytest.mark.parametrize("scoring", ["gradient", "exact"])
@pytest.mark.parametrize("refinement", ["sequential", "parallel"])
def test_ggro_runs_end_to_end_across_tokenizers(tokenizer, other_tokenizer, policy, scoring, refinement):
    model = tiny_reward_model(other_tokenizer, "qwen2", seed=63)
    reward = HFRewardModel(model, other_tokenizer, name="foreign")
    decoder = GGRODecoder(policy, tokenizer, reward, entropy_threshold=0.5, num_refinements=3, max_new_tokens=16)
    prompt = "Tell me about the water"
    result = decoder.generate(prompt, nudge_scoring=scoring, refinement=refinement)
    assert result.interventions, "the test must exercise triggers"
    assert result.reward == pytest.approx(
        reference(model, other_tokenizer, tokenizer, as_conversation(prompt), result.token_ids), abs=1e-4
    )
    tried = [c for e in result.interventions for c in e.candidates[1:]]
    assert tried and all(c.predicted_gain is not None and c.reward is not None for c in tried)
    assert any(e.accepted for e in result.interventions), "a nudge should win somewhere (it does for this seed)"
    for event in result.interventions:
        assert event.best_reward >= event.base_reward
        if event.accepted:
            assert event.best_reward > event.base_reward
    if scoring == "gradient":
        assert result.stats.reward_backward_passes > 0
    else:
        assert result.stats.reward_backward_passes == 0


def test_permuted_vocabulary_takes_the_cross_path(tokenizer, policy):
    """Same size, one swapped id: reading policy ids as reward ids would score the wrong text."""
    permuted = swap_the_water(tokenizer)
    model = tiny_reward_model(permuted, seed=64)
    decoder = GGRODecoder(policy, tokenizer, HFRewardModel(model, permuted), entropy_threshold=0.5, max_new_tokens=12)
    result = decoder.generate("Tell me about the water")
    expected = reference(model, permuted, tokenizer, as_conversation("Tell me about the water"), result.token_ids)
    assert result.reward == pytest.approx(expected, abs=1e-4)


def main() -> None:
    """Print agreement rates with exact mode (the numbers in docs/reward-models.md)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    policy_tok = tiny_tokenizer(384, seed=0)
    reward_tok = tiny_tokenizer(512, seed=7)
    policy = tiny_causal_lm(policy_tok, "llama")
    print(f"policy vocab {len(policy_tok)}, reward vocab {len(reward_tok)}, K=10 text candidates, chance = 0.10")
    for label, build in [
        ("planted mean-of-token-values", planted_reward),
        ("random tiny Llama", lambda tok: tiny_reward_model(tok, "llama", seed=3)),
    ]:
        for path, tok in [("cross-tokenizer", reward_tok), ("shared-vocabulary", policy_tok)]:
            reward = HFRewardModel(build(tok), tok)
            pairs = gain_pairs(reward, policy, policy_tok, lines=lines)
            print(
                f"{label:30s} {path:18s} top-1 agreement {top1_agreement(pairs):.3f} over {len(pairs)} "
                f"trigger positions (shuffled control {top1_agreement(pairs, shuffle=True):.3f})"
            )


if __name__ == "__main__":
    main()
