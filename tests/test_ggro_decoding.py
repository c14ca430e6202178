"""GGRO's behaviour end to end on tiny models: planted rewards, streaming, stops, seeds, errors."""

import json

import pytest
import torch

from ggro_integrations import (
    ConfigError,
    GGROConfig,
    GGRODecoder,
    InterventionEvent,
    PromptError,
    RewardModelError,
    TextDelta,
    VocabularyMismatchError,
)
from ggro_integrations.rewards import EmbeddingReward, HFRewardModel
from ggro_integrations.testing import permuted_tokenizer, tiny_causal_lm, tiny_reward_model

PROMPT = "Tell me about the water and the light"
BASE = dict(max_new_tokens=20, entropy_threshold=1.0, min_segment_tokens=3, num_refinements=4)


def token_counter(tokenizer, token):
    """Reward = number of times ``token`` appears in the conversation (linear in embeddings)."""
    table = torch.zeros(len(tokenizer), 1)
    table[token, 0] = 1.0
    return EmbeddingReward(lambda e, m: (e[..., 0] * m).sum(-1), table, tokenizer, name=f"count-{token}")


def top_k_at_triggers(policy, tokenizer, result, k):
    """Independently recompute the policy's top-k at each trigger of a finished greedy/GGRO run."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer.encode(text, add_special_tokens=False)
    ids = torch.tensor([prompt_ids + result.token_ids])
    logits = policy(input_ids=ids).logits[0]
    return [set(logits[len(prompt_ids) + e.position - 1].topk(k).indices.tolist()) for e in result.interventions]


@pytest.fixture(scope="module")
def greedy_run(policy, tokenizer, reward_hf_model):
    decoder = GGRODecoder(policy, tokenizer, HFRewardModel(reward_hf_model, tokenizer), **BASE)
    return decoder.generate(PROMPT, num_refinements=0)


@pytest.mark.parametrize("refinement", ["sequential", "parallel"])
def test_planted_token_in_top_k_is_found(policy, tokenizer, greedy_run, refinement):
    assert greedy_run.interventions, "the prompt must reach a trigger"
    first = greedy_run.interventions[0]
    tops = top_k_at_triggers(policy, tokenizer, greedy_run, 10)
    planted = next(t for t in sorted(tops[0]) if t != first.original_token_id and t not in greedy_run.token_ids)
    reward = token_counter(tokenizer, planted)
    decoder = GGRODecoder(policy, tokenizer, reward, **BASE, nudge_top_k=10, refinement=refinement)
    result = decoder.generate(PROMPT)
    baseline = decoder.generate(PROMPT, strategy="greedy")
    assert baseline.token_ids == greedy_run.token_ids
    assert planted in result.token_ids
    assert result.reward >= baseline.reward + 1
    event = result.interventions[0]
    assert event.accepted and event.chosen_token_id == planted and event.best_reward > event.base_reward
    tried = {c.token_id for c in event.candidates if not c.is_original}
    assert planted in tried and all(c.predicted_gain is not None for c in event.candidates[1:])


def test_reward_preferring_nothing_in_top_k_changes_nothing(policy, tokenizer, greedy_run):
    tops = top_k_at_triggers(policy, tokenizer, greedy_run, 5)
    outside = next(t for t in range(len(tokenizer)) if all(t not in top for top in tops) and t not in greedy_run.token_ids)
    decoder = GGRODecoder(policy, tokenizer, token_counter(tokenizer, outside), **BASE, nudge_top_k=5)
    result = decoder.generate(PROMPT)
    assert result.token_ids == greedy_run.token_ids
    assert result.interventions and not any(e.accepted for e in result.interventions)
    assert all(e.stop_reason == "no_positive_gain" and e.refinements_used == 0 for e in result.interventions)


def test_ggro_never_scores_below_its_unmodified_segments(policy, tokenizer, reward_hf_model):
    decoder = GGRODecoder(policy, tokenizer, HFRewardModel(reward_hf_model, tokenizer), **BASE)
    result = decoder.generate(PROMPT)
    assert result.interventions
    for event in result.interventions:
        rewards = [c.reward for c in event.candidates]
        assert event.best_reward == max(rewards) and event.best_reward >= event.base_reward
        assert event.accepted == (event.best_reward > event.base_reward)
        assert event.refinements_used <= 8 and len({c.token_id for c in event.candidates}) == len(event.candidates)
    # The final reward is the reward of the returned text, measured independently.
    session = HFRewardModel(reward_hf_model, tokenizer).session([{"role": "user", "content": PROMPT}], tokenizer)
    assert result.reward == pytest.approx(session.score([], [result.token_ids]).values[0].item(), abs=1e-5)


def test_parallel_and_sequential_agree_on_planted_reward(policy, tokenizer, greedy_run):
    tops = top_k_at_triggers(policy, tokenizer, greedy_run, 10)
    planted = next(t for t in sorted(tops[0]) if t != greedy_run.interventions[0].original_token_id)
    decoder = GGRODecoder(policy, tokenizer, token_counter(tokenizer, planted), **BASE, nudge_top_k=10)
    seq = decoder.generate(PROMPT, refinement="sequential")
    par = decoder.generate(PROMPT, refinement="parallel")
    assert seq.interventions[0].chosen_token_id == par.interventions[0].chosen_token_id == planted
    # Only the planted token has a positive predicted gain, so both modes try exactly the same candidates.
    assert seq.token_ids == par.token_ids and seq.reward == par.reward
    assert [e.refinements_used for e in seq.interventions] == [e.refinements_used for e in par.interventions]


def test_stream_orders_events_before_text_and_matches_generate(policy, tokenizer, reward_hf_model):
    decoder = GGRODecoder(policy, tokenizer, HFRewardModel(reward_hf_model, tokenizer), **BASE)
    stream = decoder.stream(PROMPT)
    items = list(stream)
    result = stream.result
    assert result.token_ids == decoder.generate(PROMPT).token_ids
    text = "".join(i.text for i in items if isinstance(i, TextDelta))
    assert text == result.text
    events = [i for i in items if isinstance(i, InterventionEvent)]
    assert [e.to_dict() for e in events] == [e.to_dict() for e in result.interventions] or len(events) == len(
        result.interventions
    )
    # Each event is yielded before any text at or after its character offset.
    released = 0
    for item in items:
        if isinstance(item, TextDelta):
            released += len(item.text)
        else:
            assert released <= item.char_offset


def test_event_serialisation_round_trip(policy, tokenizer, reward_hf_model):
    decoder = GGRODecoder(policy, tokenizer, HFRewardModel(reward_hf_model, tokenizer), **BASE)
    result = decoder.generate(PROMPT)
    for event in result.interventions:
        data = json.loads(json.dumps(event.to_dict()))
        assert InterventionEvent.from_dict(data) == event
        assert {"position", "char_offset", "entropy", "threshold", "candidates", "accepted", "seconds"} <= set(data)
    json.dumps(result.to_dict())


def test_stop_sequences_spanning_tokens_are_honoured(policy, tokenizer):
    decoder = GGRODecoder(policy, tokenizer, None, max_new_tokens=40)
    free = decoder.generate(PROMPT, strategy="greedy")
    # A stop string that straddles a token boundary in the middle of the free text.
    start = len(free.text) // 2
    stop = free.text[start - 2 : start + 3]
    assert len(tokenizer.encode(stop, add_special_tokens=False)) >= 2
    expected = free.text[: free.text.find(stop)]
    result = decoder.generate(PROMPT, strategy="greedy", stop=[stop, "unlikely-never-there"])
    assert result.text == expected and result.finish_reason == "stop"
    assert tokenizer.decode(result.token_ids).startswith(expected)
    stream = decoder.stream(PROMPT, stop=[stop], strategy="greedy")
    streamed = "".join(i.text for i in stream if isinstance(i, TextDelta))
    assert streamed == expected


def test_sampling_is_reproducible_with_a_seed(policy, tokenizer, reward_hf_model):
    decoder = GGRODecoder(
        policy, tokenizer, HFRewardModel(reward_hf_model, tokenizer), **{**BASE, "max_new_tokens": 12}, temperature=1.0
    )
    a = decoder.generate(PROMPT, seed=123)
    b = decoder.generate(PROMPT, seed=123)
    c = decoder.generate(PROMPT, seed=124)
    assert a.token_ids == b.token_ids and a.reward == b.reward
    assert a.token_ids != c.token_ids
    s1 = decoder.generate(PROMPT, seed=5, nudge_selection="sample", nudge_temperature=0.5)
    s2 = decoder.generate(PROMPT, seed=5, nudge_selection="sample", nudge_temperature=0.5)
    assert s1.token_ids == s2.token_ids


def test_best_of_n_keeps_the_highest_reward_sample(policy, tokenizer, reward_hf_model):
    decoder = GGRODecoder(policy, tokenizer, HFRewardModel(reward_hf_model, tokenizer), **BASE)
    result = decoder.generate(PROMPT, strategy="best_of_n", n=4, seed=1)
    assert len(result.samples) == 4
    assert result.reward == max(s["reward"] for s in result.samples)
    assert result.text in [s["text"] for s in result.samples]


def test_no_refinement_work_when_num_refinements_is_zero(policy, tokenizer, reward_hf_model):
    decoder = GGRODecoder(policy, tokenizer, HFRewardModel(reward_hf_model, tokenizer), **BASE)
    result = decoder.generate(PROMPT, num_refinements=0)
    stats = result.stats
    assert stats.reward_backward_passes == 0 and stats.reward_sequences_scored == 1  # the final reward only
    assert stats.policy_tokens_processed == stats.prompt_tokens + stats.new_tokens - (result.finish_reason != "eos")


def test_refinement_never_re_encodes_the_prompt(policy, tokenizer, reward_hf_model):
    reward = HFRewardModel(reward_hf_model, tokenizer)
    decoder = GGRODecoder(policy, tokenizer, reward, **BASE)
    long_prompt = PROMPT + " " + "and the water of the world " * 20
    for prompt in (PROMPT, long_prompt):
        result = decoder.generate(prompt)
        assert result.interventions
        # All policy work after the prompt's one prefill, from the events alone: the free run before the
        # first trigger, every candidate segment decoded, and at most one re-feed of the accepted one.
        free_run = result.interventions[0].position
        segments = sum(c.num_tokens for e in result.interventions for c in e.candidates)
        refeeds = sum(max(c.num_tokens for c in e.candidates) for e in result.interventions)
        response_work = result.stats.policy_tokens_processed - result.stats.prompt_tokens
        assert segments <= response_work <= free_run + segments + refeeds
    assert result.stats.prompt_tokens > 150


@pytest.mark.parametrize(
    "prompt, error",
    [("", PromptError), ("   ", PromptError), ([], PromptError), ([{"role": "robot", "content": "x"}], PromptError)],
)
def test_bad_prompts(policy, tokenizer, prompt, error):
    with pytest.raises(error):
        GGRODecoder(policy, tokenizer, None).generate(prompt, strategy="greedy")


def test_prompt_over_the_context_window(policy, tokenizer):
    decoder = GGRODecoder(policy, tokenizer, None, max_new_tokens=8)
    with pytest.raises(PromptError, match="context window of 512"):
        decoder.generate("water " * 600, strategy="greedy")
    with pytest.raises(PromptError, match="lower max_new_tokens"):
        decoder.generate("water " * 200, strategy="greedy", max_new_tokens=400)


def test_reward_model_errors(policy, tokenizer):
    two_labels = tiny_reward_model(tokenizer)
    two_labels.config.num_labels = 2
    with pytest.raises(RewardModelError, match="2 output labels"):
        HFRewardModel(two_labels, tokenizer)
    swapped = permuted_tokenizer(tokenizer, 100, 101)
    with pytest.raises(VocabularyMismatchError):
        GGRODecoder(policy, tokenizer, token_counter(swapped, 5))
    with pytest.raises(ConfigError, match="needs a reward model"):
        GGRODecoder(policy, tokenizer, None).generate("hi")
    with pytest.raises(ConfigError, match="strategy"):
        GGRODecoder(policy, tokenizer, None).generate("hi", strategy="beam")


def test_nan_rewards_are_rejected(policy, tokenizer):
    table = torch.zeros(len(tokenizer), 1)
    nan_reward = EmbeddingReward(lambda e, m: e[..., 0].sum(-1) * float("nan"), table, tokenizer)
    decoder = GGRODecoder(policy, tokenizer, nan_reward, **BASE)
    with pytest.raises(RewardModelError, match="non-finite"):
        decoder.generate(PROMPT)


def test_config_object_and_overrides(policy, tokenizer):
    decoder = GGRODecoder(policy, tokenizer, None, config=GGROConfig(max_new_tokens=6))
    assert len(decoder.generate("hi", strategy="greedy").token_ids) == 6
    assert len(decoder.generate("hi", strategy="greedy", max_new_tokens=3).token_ids) == 3
    with pytest.raises(ConfigError, match="entropy_threshold"):
        decoder.generate("hi", strategy="greedy", entropy_threshold=-1)


def test_plain_prompts_without_a_chat_template(tokenizer):
    from ggro_integrations.testing import tiny_tokenizer

    plain = tiny_tokenizer(chat_template=False)
    model = tiny_causal_lm(plain, "gpt2", seed=2)
    result = GGRODecoder(model, plain, None, max_new_tokens=5).generate("The water is", strategy="greedy")
    ids = torch.tensor([plain.encode("The water is")])
    expected = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False)
    assert result.token_ids == expected[0, ids.shape[1] :].tolist()[: len(result.token_ids)]
    with pytest.raises(PromptError, match="chat template"):
        GGRODecoder(model, plain, None).generate("hi", strategy="greedy", use_chat_template=True)


def test_calibrated_threshold_hits_the_target_rate(policy, tokenizer):
    from ggro_integrations import calibrate_entropy_threshold
    from ggro_integrations.decoding import policy_entropies

    decoder = GGRODecoder(policy, tokenizer, None, max_new_tokens=30)
    prompts = [PROMPT, "Why is the world so big?", "Hello"]
    threshold = calibrate_entropy_threshold(decoder, prompts, target_rate=0.25, max_new_tokens=30)
    # Independent count: entropies recomputed from the policy's logits over the greedy responses.
    entropies = []
    for prompt in prompts:
        result = decoder.generate(prompt, strategy="greedy")
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
        ids = tokenizer.encode(text, add_special_tokens=False)
        logits = policy(input_ids=torch.tensor([ids + result.token_ids])).logits[0, len(ids) - 1 : -1]
        logp = torch.log_softmax(logits.float(), -1)
        entropies += (-(logp.exp() * logp).sum(-1)).tolist()
    assert len(entropies) == len(policy_entropies(decoder, prompts, max_new_tokens=30))
    rate = sum(h >= threshold for h in entropies) / len(entropies)
    assert abs(rate - 0.25) < 0.05
    with pytest.raises(ConfigError, match="target_rate"):
        calibrate_entropy_threshold(decoder, prompts, target_rate=1.5)


def test_text_before_the_first_trigger_streams_token_by_token(policy, tokenizer):
    decoder = GGRODecoder(policy, tokenizer, None, max_new_tokens=12)
    stream = decoder.stream(PROMPT, strategy="greedy")
    deltas = [item for item in stream if isinstance(item, TextDelta)]
    assert len(deltas) >= 6  # byte-level pieces of one character may wait for the next token
    assert "".join(d.text for d in deltas) == stream.result.text
    assert sum((d.token_ids for d in deltas), []) == stream.result.token_ids


@pytest.mark.parametrize("refinement", ["sequential", "parallel"])
def test_a_nudge_that_completes_a_stop_sequence_is_the_candidate_stop_here(policy, tokenizer, reward_hf_model, refinement):
    # Regression: a forced first token that completes a stop sequence used to leave an empty
    # segment and crash with IndexError. It is a real candidate (end the response at the trigger)
    # and must be scored like any other.
    reward = HFRewardModel(reward_hf_model, tokenizer)
    knobs = dict(max_new_tokens=30, entropy_threshold=0.0, num_refinements=6, min_segment_tokens=3)
    decoder = GGRODecoder(policy, tokenizer, reward, refinement=refinement, **knobs)
    prompts = ["Tell me about the water", "What is the kind of house", "Hello there, how do you help"]
    emptied = 0
    for prompt in prompts:
        free = decoder.generate(prompt, strategy="greedy").text
        for start in range(0, min(len(free) - 1, 24), 4):
            for stop in {free[start : start + 1], free[start : start + 2]}:
                result = decoder.generate(prompt, stop=[stop])
                assert stop not in result.text
                for event in result.interventions:
                    for trial in event.candidates:
                        assert trial.reward is not None and trial.reward == trial.reward  # finite, not NaN
                        emptied += trial.num_tokens == 0 and not trial.is_original
                    if event.accepted and not event.chosen_segment:
                        assert result.finish_reason == "stop" and event.position == len(result.token_ids)
    assert emptied, "no stop string made a nudged candidate empty; the test lost its point"
