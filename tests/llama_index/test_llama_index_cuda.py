"""GGROLLM with the policy and reward model on a CUDA device (skipped without one)."""

from __future__ import annotations

import asyncio

import pytest
import torch
from conftest import CONFIG, PROMPT

from ggro_integrations import GGRODecoder
from ggro_integrations.llama_index import GGROLLM
from ggro_integrations.rewards import HFRewardModel
from ggro_integrations.rewards.registry import register_reward_model
from ggro_integrations.testing import tiny_causal_lm, tiny_reward_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def cuda_decoder(li_tokenizer):
    policy = tiny_causal_lm(li_tokenizer, "llama").to("cuda")
    reward = HFRewardModel(tiny_reward_model(li_tokenizer, "llama", seed=1).to("cuda"), li_tokenizer, name="rm-cuda")
    return GGRODecoder(policy, li_tokenizer, reward, **CONFIG)


def test_cuda_sync_stream_and_async_calls_match_the_decoder(cuda_decoder):
    llm = GGROLLM(decoder=cuda_decoder)
    expected = cuda_decoder.generate(PROMPT)
    assert expected.interventions
    assert llm.complete(PROMPT).text == expected.text
    chunks = list(llm.stream_complete(PROMPT))
    assert "".join(c.delta for c in chunks) == expected.text
    assert len(chunks[-1].additional_kwargs["interventions"]) == len(expected.interventions)

    async def two_at_once():
        return await asyncio.gather(llm.acomplete(PROMPT), llm.acomplete(PROMPT))

    # Decoding runs in worker threads here: CUDA work from two threads at once.
    assert [r.text for r in asyncio.run(two_at_once())] == [expected.text, expected.text]


def test_reward_named_per_call_loads_on_the_policys_device(cuda_decoder, li_tokenizer):
    seen = []

    def factory(device=None, **_):
        seen.append(device)
        model = tiny_reward_model(li_tokenizer, "llama", seed=5).to(device or "cpu")
        return HFRewardModel(model, li_tokenizer, name="rm-b-cuda")

    register_reward_model("llama-index-cuda-rm", factory, overwrite=True)
    llm = GGROLLM(decoder=cuda_decoder)
    response = llm.complete(PROMPT, reward_model="llama-index-cuda-rm")
    assert seen == ["cuda:0"]  # not the CPU default, which would not run against a CUDA policy
    assert response.additional_kwargs["reward_model"] == "rm-b-cuda"
    assert response.text == cuda_decoder.generate(PROMPT, reward_model=factory(device="cuda:0")).text
