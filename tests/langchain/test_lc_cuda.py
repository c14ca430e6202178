"""ChatGGRO / GGROLLM with the policy and reward model on a CUDA device (skipped without one)."""

from __future__ import annotations

import asyncio

import pytest
import torch
from lc_tiny import FAST, parts, timeless

from ggro_integrations import GGRODecoder
from ggro_integrations.langchain import GGROLLM, ChatGGRO, GGROInterventionHandler
from ggro_integrations.rewards import HFRewardModel, registry
from ggro_integrations.testing import tiny_causal_lm, tiny_reward_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

QUESTION = "Hello there, how are you?"
USER = [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def cuda_decoder():
    tokenizer = parts()[0]
    policy = tiny_causal_lm(tokenizer).to("cuda")
    reward = HFRewardModel(tiny_reward_model(tokenizer, seed=1).to("cuda"), tokenizer, name="rm-cuda")
    return GGRODecoder(policy, tokenizer, reward, **FAST)


def test_cuda_invoke_stream_async_match_the_decoder(cuda_decoder):
    chat = ChatGGRO(decoder=cuda_decoder)
    expected = cuda_decoder.generate(USER)
    assert expected.interventions
    handler = GGROInterventionHandler()
    message = chat.invoke(QUESTION, config={"callbacks": [handler]})
    assert message.content == expected.text
    assert timeless(handler.events) == timeless(expected.interventions)
    assert "".join(c.content for c in chat.stream(QUESTION)) == expected.text

    async def concurrently():
        streamed = "".join([c.content async for c in chat.astream(QUESTION)])
        both = await asyncio.gather(chat.ainvoke(QUESTION), chat.ainvoke(QUESTION))
        return streamed, [m.content for m in both]

    # Decoding runs in worker threads here: CUDA work from two threads at once.
    assert asyncio.run(concurrently()) == (expected.text, [expected.text, expected.text])
    llm = GGROLLM(decoder=cuda_decoder)
    assert asyncio.run(llm.ainvoke(QUESTION)) == llm.invoke(QUESTION) == expected.text


def test_cuda_reward_named_per_call_loads_on_the_policys_device(cuda_decoder):
    tokenizer = parts()[0]
    seen = []

    def factory(device=None, **_):
        seen.append(device)
        model = tiny_reward_model(tokenizer, seed=5).to(device or "cpu")
        return HFRewardModel(model, tokenizer, name="rm-b-cuda")

    registry.register_reward_model("langchain-cuda-rm", factory, overwrite=True)
    try:
        message = ChatGGRO(decoder=cuda_decoder).invoke(QUESTION, reward_model="langchain-cuda-rm")
        assert seen == ["cuda:0"]  # not the CPU default, which could not score a CUDA policy's tokens
        assert message.response_metadata["reward_model"] == "rm-b-cuda"
    finally:
        with registry._lock:  # no public unregister
            registry._factories.pop("langchain-cuda-rm", None)
        registry.clear_reward_cache()
