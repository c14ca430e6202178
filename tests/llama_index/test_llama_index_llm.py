"""GGROLLM against the core decoder it wraps: complete, chat, streaming, async, options, errors."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch
from conftest import CONFIG, CONVERSATION, PROMPT, SECOND_RM, SlowReward
from llama_index.core.base.llms.types import ChatMessage, MessageRole

from ggro_integrations import ConfigError, GGRODecoder, PromptError, RewardModelError
from ggro_integrations.llama_index import GGROLLM
from ggro_integrations.testing import tiny_tokenizer

MESSAGES = [
    ChatMessage(role=MessageRole.SYSTEM, content="You answer in one sentence."),
    ChatMessage(role=MessageRole.USER, content=PROMPT),
]


def _events(events):
    """Intervention dicts without their wall-clock timing, which differs from run to run."""
    return [{k: v for k, v in (e if isinstance(e, dict) else e.to_dict()).items() if k != "seconds"} for e in events]


def test_complete_is_the_decoders_generation(llm, expected):
    assert expected.interventions, "the fixture should trigger GGRO"
    response = llm.complete(PROMPT)
    assert response.text == expected.text
    extra = response.additional_kwargs
    assert extra["reward"] == pytest.approx(expected.reward)
    assert _events(extra["interventions"]) == _events(expected.interventions)
    assert extra["interventions_accepted"] == sum(e.accepted for e in expected.interventions) > 0
    assert extra["completion_tokens"] == len(expected.token_ids)
    assert response.raw["usage"]["total_tokens"] == expected.stats.prompt_tokens + len(expected.token_ids)


def test_metadata_reads_the_policy(llm, li_policy):
    meta = llm.metadata
    assert meta.context_window == li_policy.config.max_position_embeddings
    assert meta.num_output == CONFIG["max_new_tokens"]
    assert meta.is_chat_model is True
    assert llm.with_options(max_new_tokens=7).metadata.num_output == 7


def test_metadata_without_chat_template(li_policy, li_reward):
    plain = tiny_tokenizer(chat_template=False)
    llm = GGROLLM(decoder=GGRODecoder(li_policy, plain, li_reward, **CONFIG))
    assert llm.metadata.is_chat_model is False
    # Completion still works and is plain-text decoding of the prompt.
    assert llm.complete(PROMPT, strategy="greedy").text == _hf_greedy(li_policy, plain, plain.encode(PROMPT), 16)


def _hf_greedy(model, tokenizer, ids, new_tokens):
    """Independent greedy decoding with transformers' own generate."""
    out = model.generate(
        torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


def test_chat_goes_through_the_chat_template(llm, li_policy, li_tokenizer):
    ids = li_tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=True, tokenize=False)
    ids = li_tokenizer.encode(ids, add_special_tokens=False)
    expected = _hf_greedy(li_policy, li_tokenizer, ids, CONFIG["max_new_tokens"])
    response = llm.chat(MESSAGES, strategy="greedy")
    assert response.message.role == MessageRole.ASSISTANT
    assert response.message.content == expected
    assert response.additional_kwargs["strategy"] == "greedy"
    assert response.additional_kwargs["interventions"] == []


def test_chat_with_ggro_matches_decoder_on_messages(llm, expected_chat):
    expected = expected_chat
    response = llm.chat(MESSAGES)
    assert response.message.content == expected.text
    assert _events(response.additional_kwargs["interventions"]) == _events(expected.interventions)


def _check_stream(chunks, final_text, min_pieces=2):
    deltas = [c.delta for c in chunks]
    texts = [c.text if hasattr(c, "text") else c.message.content for c in chunks]
    assert "".join(deltas) == final_text
    running = ""
    for delta, text in zip(deltas, texts):
        running += delta
        assert text == running  # cumulative text is exactly the deltas so far
    assert len([d for d in deltas if d]) >= min_pieces, "GGRO should release text in several committed pieces"
    assert all(not c.additional_kwargs for c in chunks[:-1])
    return chunks[-1].additional_kwargs


def test_stream_complete_deltas_add_up(llm, expected):
    summary = _check_stream(list(llm.stream_complete(PROMPT)), expected.text)
    assert _events(summary["interventions"]) == _events(expected.interventions)
    assert summary["reward"] == pytest.approx(expected.reward)


def test_stream_chat_deltas_add_up(llm, expected_chat):
    summary = _check_stream(list(llm.stream_chat(MESSAGES)), expected_chat.text)
    assert summary["finish_reason"] == expected_chat.finish_reason


def test_greedy_streams(llm, decoder):
    expected = decoder.generate(PROMPT, strategy="greedy")
    chunks = list(llm.stream_complete(PROMPT, strategy="greedy"))
    # The core releases greedy text in one piece once decoding ends; only the concatenation matters here.
    summary = _check_stream(chunks, expected.text, min_pieces=1)
    assert summary["strategy"] == "greedy" and summary["interventions"] == []


def test_stream_stops_early_without_error(llm):
    stream = llm.stream_complete(PROMPT)
    first = next(stream)
    assert first.delta
    stream.close()


def test_per_call_overrides_reach_the_decoder(llm, decoder):
    overrides = {"entropy_threshold": 3.0, "num_refinements": 1, "nudge_top_k": 3}
    expected = decoder.generate(PROMPT, **overrides)
    response = llm.complete(PROMPT, **overrides)
    assert response.text == expected.text
    events = response.additional_kwargs["interventions"]
    assert events and all(e["threshold"] == 3.0 and e["refinements_used"] <= 1 for e in events)
    assert all(e["entropy"] >= 3.0 for e in events)
    default = llm.complete(PROMPT).additional_kwargs["interventions"]
    assert {e["threshold"] for e in default} == {CONFIG["entropy_threshold"]}  # the override was per call only
    assert any(e["refinements_used"] > 1 for e in default)


def test_stop_sequence_per_call(llm, decoder):
    full = decoder.generate(PROMPT, strategy="greedy").text
    stop = full[6:8]
    assert stop and stop in full
    text = llm.complete(PROMPT, strategy="greedy", stop=[stop]).text
    assert text == full[: full.index(stop)]


def test_reward_model_by_name_per_call(llm, decoder, li_reward_b):
    expected = decoder.generate(PROMPT, reward_model=li_reward_b)
    response = llm.complete(PROMPT, reward_model=SECOND_RM)
    assert response.text == expected.text
    assert response.additional_kwargs["reward_model"] == "tiny-rm-b"
    assert {e["reward_model"] for e in response.additional_kwargs["interventions"]} == {"tiny-rm-b"}
    assert response.additional_kwargs["reward"] == pytest.approx(expected.reward)


def test_with_options_shares_the_decoder(llm):
    greedy = llm.with_options(strategy="greedy", max_new_tokens=8)
    assert greedy.decoder is llm.decoder
    assert llm.strategy == "ggro" and llm.ggro_kwargs == {}
    response = greedy.complete(PROMPT)
    assert response.additional_kwargs["strategy"] == "greedy"
    assert response.additional_kwargs["completion_tokens"] <= 8
    assert greedy.complete(PROMPT, strategy="ggro").additional_kwargs["strategy"] == "ggro"


def test_best_of_n_per_call(llm):
    response = llm.complete(PROMPT, strategy="best_of_n", n=3)
    assert response.additional_kwargs["strategy"] == "best_of_n"
    assert len(response.raw["samples"]) == 3
    assert response.text in [s["text"] for s in response.raw["samples"]]


# -- errors --------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["complete", "chat", "stream_complete", "stream_chat"])
def test_unknown_reward_model_name(llm, call):
    arg = PROMPT if "complete" in call else MESSAGES
    with pytest.raises(RewardModelError, match="no-such-reward"):
        getattr(llm, call)(arg, reward_model="no-such-reward")  # raised by the call, not on iteration


@pytest.mark.parametrize("threshold", [-1.0, "high", float("nan")])
@pytest.mark.parametrize("call", ["complete", "chat", "stream_complete"])
def test_bad_threshold(llm, call, threshold):
    arg = PROMPT if "complete" in call else MESSAGES
    with pytest.raises(ConfigError, match="entropy_threshold"):
        getattr(llm, call)(arg, entropy_threshold=threshold)


def test_empty_prompts(llm):
    with pytest.raises(PromptError, match="empty"):
        llm.complete("   ")
    with pytest.raises(PromptError, match="empty"):
        llm.stream_complete("")
    with pytest.raises(PromptError, match="empty"):
        llm.chat([])
    with pytest.raises(PromptError):
        llm.chat([ChatMessage(role=MessageRole.USER, content="")])


def test_bad_best_of_n_count(llm):
    with pytest.raises(ConfigError, match="best_of_n"):
        llm.stream_complete(PROMPT, strategy="best_of_n", n=0)


def test_unknown_option_lists_valid_ones(llm):
    with pytest.raises(ConfigError, match="entropy_treshold.*entropy_threshold"):
        llm.complete(PROMPT, entropy_treshold=2.0)
    with pytest.raises(ConfigError, match="strategy"):
        llm.complete(PROMPT, strategy="beam")


def test_bad_options_fail_at_construction(decoder):
    with pytest.raises(ConfigError, match="num_refinements"):
        GGROLLM(decoder=decoder, ggro_kwargs={"num_refinements": -1})
    with pytest.raises(RewardModelError, match="no-such-reward"):
        GGROLLM(decoder=decoder, reward_model="no-such-reward")


def test_ggro_without_any_reward_model(li_policy, li_tokenizer):
    llm = GGROLLM(decoder=GGRODecoder(li_policy, li_tokenizer, None, **CONFIG))
    with pytest.raises(ConfigError, match="reward_model"):
        llm.complete(PROMPT)
    assert llm.complete(PROMPT, strategy="greedy").text


# -- async ---------------------------------------------------------------------------------


async def test_async_methods_match_sync(llm, expected, expected_chat):
    assert (await llm.acomplete(PROMPT)).text == expected.text
    chunks = [c async for c in await llm.astream_complete(PROMPT)]
    summary = _check_stream(chunks, expected.text)
    assert _events(summary["interventions"]) == _events(expected.interventions)
    assert (await llm.achat(MESSAGES)).message.content == expected_chat.text
    _check_stream([c async for c in await llm.astream_chat(MESSAGES)], expected_chat.text)


async def test_async_errors_raise_from_the_call(llm):
    with pytest.raises(RewardModelError):
        await llm.acomplete(PROMPT, reward_model="no-such-reward")
    with pytest.raises(PromptError):
        await llm.astream_chat([])


async def test_async_stream_closed_early(llm):
    stream = await llm.astream_complete(PROMPT)
    async for chunk in stream:
        assert chunk.delta
        break
    await stream.aclose()
    assert (await llm.acomplete(PROMPT)).text  # the LLM is still usable


async def test_async_error_mid_decoding_propagates(decoder, li_reward):
    llm = GGROLLM(decoder=decoder).with_options(reward_model=SlowReward(li_reward, 0.0, fail_after=3))
    with pytest.raises(RewardModelError, match="broke mid-decoding"):
        await llm.acomplete(PROMPT)
    llm = GGROLLM(decoder=decoder).with_options(reward_model=SlowReward(li_reward, 0.0, fail_after=3))
    stream = await llm.astream_chat(MESSAGES)
    with pytest.raises(RewardModelError, match="broke mid-decoding"):
        async for _ in stream:
            pass


async def test_cancelling_acomplete_stops_the_worker(decoder, li_reward):
    slow = SlowReward(li_reward, delay=0.02)
    llm = GGROLLM(decoder=decoder).with_options(reward_model=slow, max_new_tokens=128)
    task = asyncio.create_task(llm.acomplete(PROMPT))
    while slow.calls < 3:  # decoding is under way in the worker thread
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(1.0)  # the worker finishes the step it was in, then stops
    settled = slow.calls
    await asyncio.sleep(0.5)
    assert slow.calls == settled, "the worker kept decoding after the caller was cancelled"
    assert settled < 60  # far from a full 128-token generation (about 5 scoring calls per trigger)


async def _max_tick_gap(work):
    """Run ``work`` while a coroutine ticks every 2 ms; the longest gap between ticks and the elapsed time."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker():
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # let the ticker start
    start = time.perf_counter()
    results = await work()
    elapsed = time.perf_counter() - start
    done.set()
    await task
    return max(gaps), elapsed, results


async def test_concurrent_acomplete_does_not_block_the_event_loop(decoder, li_reward):
    slow = GGROLLM(decoder=decoder).with_options(reward_model=SlowReward(li_reward, delay=0.02), max_new_tokens=8)

    async def blocking():  # control: what CustomLLM's default async methods do
        return [slow.complete(PROMPT), slow.complete(PROMPT)]

    async def concurrent():
        return await asyncio.gather(slow.acomplete(PROMPT), slow.acomplete(PROMPT))

    blocked_gap, blocked_time, _ = await _max_tick_gap(blocking)
    assert blocked_time > 0.3 and blocked_gap > 0.9 * blocked_time  # the measurement can see blocking

    gap, elapsed, results = await _max_tick_gap(concurrent)
    assert gap < 0.1 * elapsed, f"the loop stalled {gap:.3f}s of {elapsed:.3f}s"
    expected = decoder.generate(PROMPT, max_new_tokens=8).text
    assert [r.text for r in results] == [expected, expected]


class _ForwardCounter:
    """Counts the policy's forward calls (an independent count: a hook on the torch module)."""

    def __init__(self, model):
        self.calls = 0
        self._handle = model.register_forward_hook(self._hook)

    def _hook(self, *args):
        self.calls += 1

    def remove(self):
        self._handle.remove()


async def _settled(counter, quiet=0.4):
    """Wait until the count stops moving; returns it."""
    while True:
        before = counter.calls
        await asyncio.sleep(quiet)
        if counter.calls == before:
            return before


@pytest.mark.parametrize("method", ["astream_complete", "astream_chat"])
async def test_a_stream_left_unread_stops_decoding(decoder, li_policy, method):
    # Regression: a consumer that stops iterating without aclose() (the ordinary way to stop)
    # used to leave decoding running to the end of the budget.
    llm = GGROLLM(decoder=decoder).with_options(strategy="greedy", max_new_tokens=200)
    full = decoder.generate(PROMPT, strategy="greedy", max_new_tokens=200)
    assert len(full.token_ids) > 100, "the reference must be long for the test to mean anything"
    counter = _ForwardCounter(li_policy)
    try:
        stream = await getattr(llm, method)(PROMPT if method == "astream_complete" else MESSAGES)
        async for _chunk in stream:
            break
        used = await _settled(counter)
    finally:
        counter.remove()
    assert used < 20, f"{used} policy forwards after the consumer stopped reading (a full run is {len(full.token_ids)})"
    del stream


async def test_cancelling_best_of_n_stops_its_batch(decoder, li_policy):
    # Best-of-N yields only once every sample ends; cancelling must still stop the batch mid-way.
    llm = GGROLLM(decoder=decoder).with_options(strategy="best_of_n", best_of_n=4, max_new_tokens=400)
    counter = _ForwardCounter(li_policy)
    try:
        task = asyncio.create_task(llm.acomplete(PROMPT))
        while counter.calls < 5:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        used = await _settled(counter)
    finally:
        counter.remove()
    assert used < 100, f"{used} forwards: the batch ran on after cancellation"
