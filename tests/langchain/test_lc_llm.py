"""GGROLLM: the BaseLLM front door over the same decoder."""

from __future__ import annotations

import json
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from lc_tiny import timeless

from ggro_integrations.langchain import GGROLLM, GGROInterventionHandler

PROMPT = "Hello there, how are you?"


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self.llm_runs: list[Any] = []

    def on_llm_start(self, serialized: Any, prompts: Any, *, run_id: Any, **kwargs: Any) -> None:
        self.llm_runs.append(run_id)

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.log.append(("token", token))

    def on_custom_event(self, name: str, data: Any, *, run_id: Any, **kwargs: Any) -> None:
        self.log.append(("event", (run_id, data)))


def test_invoke_returns_only_the_response(scripted):
    decoder = scripted(lambda prompt: "alpha beta")
    assert GGROLLM(decoder=decoder).invoke("Say two words.") == "alpha beta"
    # The string prompt went through the chat template (the decoder's default for a templated policy)...
    assert decoder.model.prompts[-1] == decoder.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Say two words."}], tokenize=False, add_generation_prompt=True
    )
    # ...or verbatim for raw completion.
    assert GGROLLM(decoder=decoder, use_chat_template=False).invoke("Once upon a time") == "alpha beta"
    assert decoder.model.prompts[-1] == "Once upon a time"


def test_invoke_and_stream_match_the_core_with_events_first(llm, decoder):
    reference = decoder.generate(PROMPT)
    assert llm.invoke(PROMPT) == reference.text
    recorder = Recorder()
    chunks = list(llm.stream(PROMPT, config={"callbacks": [recorder]}))
    assert "".join(chunks) == reference.text and len([c for c in chunks if c]) > 1
    released, events = "", []
    for kind, payload in recorder.log:
        if kind == "token":
            released += payload
        else:
            run_id, data = payload
            assert run_id == recorder.llm_runs[0]  # sent to the LLM run itself
            assert len(released) <= data["char_offset"]
            events.append(data)
    assert released == reference.text
    assert timeless(events) == timeless(reference.interventions)


def test_multi_token_stop_in_invoke_and_stream(scripted):
    llm = GGROLLM(decoder=scripted(lambda prompt: "alpha beta gamma delta"))
    assert llm.invoke("go", stop=["a gam"]) == "alpha bet"
    assert "".join(llm.stream("go", stop=["a gam"])) == "alpha bet"


def test_generate_sends_each_prompts_events_to_its_own_run(llm):
    handler = GGROInterventionHandler()
    prompts = [PROMPT, "Tell me about water."]
    result = llm.generate(prompts, callbacks=[handler])
    run_ids = [info.run_id for info in result.run]
    for run_id, generations in zip(run_ids, result.generations):
        expected = generations[0].generation_info["ggro_interventions"]
        assert expected and timeless(handler.by_run[run_id]) == timeless(expected)
    usage = result.llm_output["token_usage"]
    stats = [g[0].generation_info["ggro_stats"] for g in result.generations]
    assert usage["completion_tokens"] == sum(s["new_tokens"] for s in stats)
    assert llm.batch(prompts) == [llm.invoke(p) for p in prompts]


def test_streaming_field_fires_token_callbacks(decoder):
    recorder = Recorder()
    text = GGROLLM(decoder=decoder, streaming=True).invoke(PROMPT, config={"callbacks": [recorder]})
    assert "".join(p for k, p in recorder.log if k == "token") == text
    assert any(k == "event" for k, _ in recorder.log)


async def test_async_paths(llm):
    expected = llm.invoke(PROMPT)
    assert await llm.ainvoke(PROMPT) == expected
    assert "".join([c async for c in llm.astream(PROMPT)]) == expected
    handler = GGROInterventionHandler()
    out = await llm.abatch([PROMPT, "Tell me about water."], config={"callbacks": [handler]})
    assert out[0] == expected and len(handler.by_run) == 2
    assert sorted(json.dumps(timeless(v)) for v in handler.by_run.values()) == sorted(
        json.dumps(timeless(g[0].generation_info["ggro_interventions"]))
        for g in llm.generate([PROMPT, "Tell me about water."]).generations
    )


def test_llm_standard_metadata(llm):
    params = llm._get_ls_params(stop=["x"])
    assert params["ls_provider"] == "ggro" and params["ls_model_type"] == "llm"
    assert params["ls_stop"] == ["x"] and params["ls_max_tokens"] == llm.decoder.config.max_new_tokens
    assert llm._llm_type == "ggro"
    assert llm.metadata["lc_versions"]["ggro-integrations"]
