"""The front doors with the policy on a real llama.cpp server: build_decoder, ChatGGRO, both GGROLLMs, the CLI."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ggro_integrations.backends.server import CompletionRequest, ServerBackend
from ggro_integrations.errors import ConfigError
from ggro_integrations.factory import build_decoder
from ggro_integrations.models import DEFAULT_POLICY_ID

pytestmark = pytest.mark.slow

PROMPTS = ["What is the capital of Australia?", "Name a primary colour.", "Say hello in French."]
N = 8


@pytest.fixture(scope="module")
def decoder(llama_server: Any, smollm: Any) -> Any:
    return build_decoder("default", None, server=llama_server.url, max_new_tokens=N)


def server_greedy(decoder: Any, prompt: str) -> list[int]:
    ids = decoder.prompt_ids(prompt)
    result = decoder.backend.client.complete(CompletionRequest(prompt=ids, max_tokens=N, top_logprobs=1, stop_token_ids=[2]))
    return [t for t in result.token_ids if t != 2]


def test_build_decoder_on_a_server_keeps_the_defaults_settings(decoder: Any) -> None:
    backend = decoder.backend
    assert isinstance(backend, ServerBackend) and decoder.model is None
    assert backend.name == DEFAULT_POLICY_ID and backend.eos_ids == {2}
    # the embedded default's measured settings (threshold 2.0, top-K 5) apply, and N covers K plus EOS
    assert decoder.config.entropy_threshold == 2.0 and decoder.config.nudge_top_k == 5
    assert backend.top_logprobs == 20 and backend.info is not None and backend.info.vocabulary_checked
    assert backend.context_window == 1024  # -c 4096 over -np 4 slots, as the server reports it
    assert decoder.generate(PROMPTS[0], strategy="greedy").token_ids == server_greedy(decoder, PROMPTS[0])


def test_server_options_without_a_server_are_refused() -> None:
    with pytest.raises(ConfigError, match="pass server=URL"):
        build_decoder("default", None, server_options={"top_logprobs": 30})


def test_chat_ggro_from_server_and_concurrent_abatch(llama_server: Any, decoder: Any) -> None:
    from ggro_integrations.langchain import ChatGGRO

    chat = ChatGGRO.from_server(llama_server.url, reward_model=None, strategy="greedy", max_new_tokens=N)
    assert isinstance(chat.decoder.backend, ServerBackend) and chat.model_id == "default"
    assert chat.profile["tool_calling"] is False and chat.profile["structured_output"] is False
    with pytest.raises(ConfigError, match="tools= is not supported on ServerBackend"):
        chat.bind_tools([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    message = chat.invoke(PROMPTS[0])
    assert message.response_metadata["ggro_stats"]["new_tokens"] > 0
    assert message.content == decoder.generate(PROMPTS[0], strategy="greedy").text
    together = asyncio.run(chat.abatch(PROMPTS))
    assert [m.content for m in together] == [decoder.generate(p, strategy="greedy").text for p in PROMPTS]


def test_langchain_llm_abatch_sends_the_prompts_at_once(llama_server: Any, decoder: Any) -> None:
    from ggro_integrations.langchain import GGROLLM

    llm = GGROLLM.from_server(llama_server.url, reward_model=None, strategy="greedy", max_new_tokens=N)
    started: list[str] = []
    real_stream = llm.decoder.stream

    def stream(call: Any, **kw: Any) -> Any:
        started.append(call.conversation[-1]["content"])
        return real_stream(call, **kw)

    llm.decoder.stream = stream  # type: ignore[method-assign]
    texts = asyncio.run(llm.abatch(PROMPTS))
    assert texts == [decoder.generate(p, strategy="greedy").text for p in PROMPTS]
    assert sorted(started) == sorted(PROMPTS)
    assert llm.decoder.backend.concurrent_sessions  # so _agenerate gathered them instead of looping


def test_llama_index_from_server(llama_server: Any, decoder: Any) -> None:
    from ggro_integrations.llama_index import GGROLLM

    llm = GGROLLM.from_server(llama_server.url, reward_model=None, strategy="greedy", max_new_tokens=N)
    assert llm.metadata.model_name == DEFAULT_POLICY_ID
    assert llm.complete(PROMPTS[1]).text == decoder.generate(PROMPTS[1], strategy="greedy").text

    async def both() -> list[str]:
        return [r.text for r in await asyncio.gather(*(llm.acomplete(p) for p in PROMPTS[:2]))]

    assert asyncio.run(both()) == [decoder.generate(p, strategy="greedy").text for p in PROMPTS[:2]]


def test_cli_generate_on_a_server(llama_server: Any, decoder: Any, capsys: Any) -> None:
    from ggro_integrations.cli import main

    code = main(["generate", PROMPTS[2], "--server", llama_server.url, "--strategy", "greedy",
                 "--max-new-tokens", str(N), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["results"][0]["text"] == decoder.generate(PROMPTS[2], strategy="greedy").text
    assert main(["generate", "Hi", "--engine", "vllm"]) != 0
    assert "--server URL" in capsys.readouterr().err
