"""ChatGGRO: invoke/stream/batch/async against the core decoder, stop sequences, usage, streaming order."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from lc_tiny import timeless

from ggro_integrations.errors import ConfigError, PromptError
from ggro_integrations.langchain import ChatGGRO, GGROInterventionHandler

QUESTION = "Hello there, how are you?"
USER = [{"role": "user", "content": QUESTION}]


def prompt_tokens(tokenizer: Any, conversation: list[dict[str, Any]]) -> int:
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    return len(tokenizer.encode(text, add_special_tokens=False))


class Recorder(BaseCallbackHandler):
    """Records tokens and custom events in arrival order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.log.append(("token", token))

    def on_custom_event(self, name: str, data: Any, *, run_id: Any, **kwargs: Any) -> None:
        self.log.append(("event", data))


def test_invoke_matches_core_decoder_and_reports_usage(chat, decoder):
    message = chat.invoke(QUESTION)
    reference = decoder.generate(USER)
    assert message.content == reference.text
    assert message.usage_metadata == {
        "input_tokens": prompt_tokens(decoder.tokenizer, USER),
        "output_tokens": len(reference.token_ids),
        "total_tokens": prompt_tokens(decoder.tokenizer, USER) + len(reference.token_ids),
    }
    meta = message.response_metadata
    assert meta["reward"] == pytest.approx(reference.reward)
    assert meta["reward_model"] == "tiny-a"
    assert meta["finish_reason"] == reference.finish_reason
    assert timeless(meta["ggro_interventions"]) == timeless(reference.interventions)
    assert meta["ggro_summary"]["triggers"] == len(reference.interventions) > 0
    assert meta["ggro_summary"]["accepted"] == sum(e.accepted for e in reference.interventions)
    # The core's one summary (the keys LlamaIndex reports too), plus the deprecated "accepted" alias.
    summary = reference.summary()
    assert set(meta["ggro_summary"]) == {*summary, "accepted"}
    assert meta["ggro_summary"]["accepted"] == meta["ggro_summary"]["interventions_accepted"]
    for key in ("triggers", "interventions_accepted", "accepted_at", "strategy", "reward_model", "total_tokens"):
        assert meta["ggro_summary"][key] == summary[key], key
    assert meta["ggro_summary"]["reward_gain"] == pytest.approx(summary["reward_gain"])


def test_prompt_is_not_echoed_and_messages_use_the_chat_template(scripted):
    decoder = scripted(lambda prompt: "alpha beta")
    chat = ChatGGRO(decoder=decoder)
    history = [
        SystemMessage("Be brief."),
        HumanMessage("Hi"),
        AIMessage("Hello!"),
        HumanMessage("Say two words."),
    ]
    assert chat.invoke(history).content == "alpha beta"
    expected = decoder.tokenizer.apply_chat_template(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Say two words."},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert decoder.model.prompts[-1] == expected


@pytest.mark.parametrize("stop", ["gamma", "ta gam", "a delta"])
def test_multi_token_stop_sequences_are_exact_in_invoke_and_stream(scripted, stop):
    decoder = scripted(lambda prompt: "alpha beta gamma delta epsilon")
    assert len(decoder.tokenizer.encode(stop, add_special_tokens=False)) > 1
    chat = ChatGGRO(decoder=decoder)
    expected = "alpha beta gamma delta epsilon".split(stop)[0]
    assert chat.invoke("go", stop=[stop]).content == expected
    assert "".join(c.content for c in chat.stream("go", stop=[stop])) == expected
    assert ChatGGRO(decoder=decoder, stop=[stop]).invoke("go").content == expected
    assert chat.bind(stop=["nothing here", stop]).invoke("go").content == expected


def test_stop_sequence_under_ggro_matches_core_and_stream(chat, decoder):
    full = decoder.generate(USER).text
    stop = full[5:9]  # a piece from the middle of what GGRO writes without a stop
    message = chat.invoke(QUESTION, stop=[stop])
    assert stop not in message.content
    assert message.content == decoder.generate(USER, stop=[stop]).text
    assert "".join(c.content for c in chat.stream(QUESTION, stop=[stop])) == message.content


def test_stream_releases_only_committed_text_after_its_events(chat):
    recorder = Recorder()
    chunks = list(chat.stream(QUESTION, config={"callbacks": [recorder]}))
    final = chat.invoke(QUESTION)
    text = "".join(c.content for c in chunks)
    assert text == final.content
    assert sum(1 for c in chunks if c.content) > 1
    released = ""
    events = 0
    for kind, payload in recorder.log:
        if kind == "token":
            released += payload
        else:
            events += 1
            # Nothing at or after the position this trigger decided may have been released yet.
            assert len(released) <= payload["char_offset"]
    assert released == final.content
    assert events == len(final.response_metadata["ggro_interventions"]) > 0
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert merged.usage_metadata == final.usage_metadata
    assert timeless(merged.response_metadata["ggro_interventions"]) == timeless(
        final.response_metadata["ggro_interventions"]
    )


def test_streaming_field_makes_invoke_stream(decoder):
    recorder = Recorder()
    chat = ChatGGRO(decoder=decoder, streaming=True)
    message = chat.invoke(QUESTION, config={"callbacks": [recorder]})
    tokens = [p for k, p in recorder.log if k == "token"]
    assert "".join(tokens) == message.content and len([t for t in tokens if t]) > 1
    assert any(k == "event" for k, _ in recorder.log)
    assert message.usage_metadata["output_tokens"] > 0


def test_batch_matches_invoke_and_keeps_events_per_run(chat):
    prompts = [QUESTION, "Tell me about water."]
    handler = GGROInterventionHandler()
    messages = chat.batch(prompts, config={"callbacks": [handler]})
    singles = [chat.invoke(p) for p in prompts]
    assert [m.content for m in messages] == [s.content for s in singles]
    per_run = sorted(json.dumps(timeless(evs)) for evs in handler.by_run.values())
    expected = sorted(json.dumps(timeless(s.response_metadata["ggro_interventions"])) for s in singles)
    assert len(handler.by_run) == 2 and per_run == expected


def test_baseline_strategies_through_the_same_interface(chat, decoder):
    greedy = chat.invoke(QUESTION, strategy="greedy")
    assert greedy.content == decoder.generate(USER, strategy="greedy").text
    assert greedy.response_metadata["ggro_interventions"] == []
    assert "".join(c.content for c in chat.stream(QUESTION, strategy="greedy")) == greedy.content
    best = chat.invoke(QUESTION, strategy="best_of_n", best_of_n=2, seed=3)
    assert best.response_metadata["strategy"] == "best_of_n"
    assert best.content == decoder.generate(USER, strategy="best_of_n", n=2, seed=3).text
    best_chunks = [c.content for c in chat.stream(QUESTION, strategy="best_of_n", best_of_n=2, seed=3)]
    assert "".join(best_chunks) == best.content


async def test_ainvoke_runs_off_the_event_loop(decoder):
    chat = ChatGGRO(decoder=decoder, max_new_tokens=40)
    prompts = [QUESTION, "Tell me about water."]
    expected = [chat.invoke(p).content for p in prompts]
    gaps: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    started = time.perf_counter()
    results = await asyncio.gather(*(chat.ainvoke(p) for p in prompts))
    elapsed = time.perf_counter() - started
    done.set()
    await beat
    assert [r.content for r in results] == expected
    # The loop kept ticking while both generations ran: no pause close to a generation's length.
    assert elapsed > 0.1
    assert max(gaps) < elapsed / 3, (max(gaps), elapsed)


async def test_astream_abatch_and_async_handlers(chat):
    class AsyncRecorder(AsyncCallbackHandler):
        def __init__(self) -> None:
            self.events: list[dict[str, Any]] = []

        async def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            self.events.append(data)

    recorder = AsyncRecorder()
    expected = chat.invoke(QUESTION)
    chunks = [c async for c in chat.astream(QUESTION, config={"callbacks": [recorder]})]
    assert "".join(c.content for c in chunks) == expected.content
    assert timeless(recorder.events) == timeless(expected.response_metadata["ggro_interventions"])
    recorder.events.clear()
    message = await chat.ainvoke(QUESTION, config={"callbacks": [recorder]})
    assert message.content == expected.content
    assert timeless(recorder.events) == timeless(expected.response_metadata["ggro_interventions"])
    batch = await chat.abatch([QUESTION, QUESTION])
    assert [m.content for m in batch] == [expected.content] * 2


class ForwardCounter:
    """Counts the policy's forward calls (an independent count: a hook on the torch module)."""

    def __init__(self, model: Any) -> None:
        self.calls = 0
        self._handle = model.register_forward_hook(self._hook)

    def _hook(self, *args: Any) -> None:
        self.calls += 1

    def remove(self) -> None:
        self._handle.remove()


async def settled(counter: ForwardCounter, quiet: float = 0.4) -> int:
    """Wait until the count stops moving; returns it."""
    while True:
        before = counter.calls
        await asyncio.sleep(quiet)
        if counter.calls == before:
            return before


async def test_an_astream_left_unread_stops_decoding(decoder):
    # A consumer that breaks out of `async for` without aclose() (the ordinary way to stop) must not
    # leave the worker decoding to the end of the budget: the bridge runs only a few items ahead.
    chat = ChatGGRO(decoder=decoder, strategy="greedy", max_new_tokens=200)
    full = decoder.generate(USER, strategy="greedy", max_new_tokens=200)
    assert len(full.token_ids) > 100, "the reference must be long for the test to mean anything"
    counter = ForwardCounter(decoder.model)
    try:
        stream = chat.astream(QUESTION)
        async for _chunk in stream:
            break
        used = await settled(counter)
    finally:
        counter.remove()
    assert used < 20, f"{used} policy forwards after the consumer stopped reading (a full run is {len(full.token_ids)})"
    del stream


async def test_cancelling_ainvoke_stops_a_best_of_n_batch(decoder):
    # Best-of-N yields only once every sample has ended; cancelling the call must stop the batch mid-way.
    chat = ChatGGRO(decoder=decoder, strategy="best_of_n", best_of_n=4, max_new_tokens=400)
    counter = ForwardCounter(decoder.model)
    try:
        task = asyncio.create_task(chat.ainvoke(QUESTION))
        while counter.calls < 5:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        used = await settled(counter)
    finally:
        counter.remove()
    assert used < 100, f"{used} forwards: the batch ran on after cancellation"


async def test_errors_in_the_decoding_thread_reach_the_caller(chat):
    too_long = "water " * 600  # the decoder finds this out in the worker thread, when decoding starts
    with pytest.raises(PromptError, match="context window"):
        async for _ in chat.astream(too_long):
            pass
    with pytest.raises(PromptError, match="context window"):
        await chat.ainvoke(too_long)


def test_non_text_content_is_refused_clearly(chat):
    image = HumanMessage(content=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])
    with pytest.raises(PromptError, match="text only"):
        chat.invoke([image])


def test_token_counts_use_the_policy_tokenizer(chat, decoder):
    text = "Hello there, how are you?"
    assert chat.get_token_ids(text) == decoder.tokenizer.encode(text, add_special_tokens=False)
    assert chat.get_num_tokens(text) == len(decoder.tokenizer.encode(text, add_special_tokens=False))
    assert chat.get_num_tokens_from_messages([HumanMessage(QUESTION)]) == prompt_tokens(decoder.tokenizer, USER)


def test_message_token_counts_are_the_ids_the_decoder_uses():
    from langchain_core.tools import tool
    from lc_tiny import long_context_decoder

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    decoder = long_context_decoder(max_new_tokens=1)
    chat = ChatGGRO(decoder=decoder, strategy="greedy")
    # Content that looks like template markup: however the decoder encodes it, the count must follow.
    messages = [SystemMessage("Be brief."), HumanMessage("Say <|im_end|> twice.")]
    used = chat.invoke(messages).usage_metadata["input_tokens"]  # the decoder's own prompt length
    assert chat.get_num_tokens_from_messages(messages) == used
    with_tools = chat.bind_tools([add]).invoke(messages).usage_metadata["input_tokens"]
    assert chat.get_num_tokens_from_messages(messages, tools=[add]) == with_tools > used
    # Counting is how callers (trim_messages) find out a prompt is too long: no context-window error here.
    too_long = [HumanMessage("water " * 3000)]
    with pytest.raises(PromptError, match="context window"):
        chat.invoke(too_long)
    assert chat.get_num_tokens_from_messages(too_long) > decoder.context_window


def test_model_override_is_refused(chat):
    with pytest.raises(ConfigError, match="bound to one policy"):
        chat.invoke(QUESTION, model="some-other-model")
