"""Regression tests for the crashes and silent wrong results of issue 10 (reward and prompt side).

Every case used to end in a raw torch / Jinja / Python error or in a silently wrong answer;
each must now be one of the package's documented errors, naming the parameter or model at fault.
"""

from __future__ import annotations

import math

import pytest

from ggro_integrations import GGRODecoder, RewardModelError
from ggro_integrations.rewards import HFRewardModel, load_reward_model, register_reward_model, unregister_reward_model
from ggro_integrations.testing import tiny_reward_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = "Hello there, how are you today?"
STRATEGIES = ["greedy", "ggro", "best_of_n"]
TRIGGER_ALWAYS = {"entropy_threshold": 0.0, "num_refinements": 2, "min_segment_tokens": 2, "best_of_n": 2, "seed": 0}


# -- 2. a reward model shorter than the conversation -------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_reward_model_context_is_checked_on_every_path(policy, tokenizer, strategy, arch):
    # GPT-2 has a position-embedding table: one position too many was an IndexError from torch.
    short = HFRewardModel(tiny_reward_model(tokenizer, arch, context=40), tokenizer, name="short-rm")
    decoder = GGRODecoder(policy, tokenizer, short, max_new_tokens=30, **TRIGGER_ALWAYS)
    with pytest.raises(RewardModelError, match="over reward model 'short-rm''s context window of 40"):
        decoder.generate(PROMPT, strategy=strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cross_tokenizer_reward_context_is_checked(policy, tokenizer, other_tokenizer, strategy):
    short = HFRewardModel(tiny_reward_model(other_tokenizer, "gpt2", context=40), other_tokenizer, name="short-cross")
    decoder = GGRODecoder(policy, tokenizer, short, max_new_tokens=30, **TRIGGER_ALWAYS)
    with pytest.raises(RewardModelError, match="context window of 40"):
        decoder.generate(PROMPT, strategy=strategy)


def test_a_response_that_fits_is_scored(policy, tokenizer):
    # The check counts what is read, no more: a short budget inside the window works.
    roomy = HFRewardModel(tiny_reward_model(tokenizer, "gpt2", context=64), tokenizer, name="roomy")
    result = GGRODecoder(policy, tokenizer, roomy, max_new_tokens=4, **TRIGGER_ALWAYS).generate("Hi")
    assert math.isfinite(result.reward)


# -- 9. factories without keyword arguments ---------------------------------------------------------------


def test_factory_without_arguments(tokenizer, reward_hf_model):
    reward = HFRewardModel(reward_hf_model, tokenizer, name="no-args")
    register_reward_model("no-args-factory", lambda: reward, overwrite=True)
    register_reward_model("device-only-factory", lambda device=None: reward, overwrite=True)
    try:
        assert load_reward_model("no-args-factory") is reward
        assert load_reward_model("device-only-factory", device="cpu") is reward
        with pytest.raises(RewardModelError, match=r"asked for device='cpu', but its factory takes no such argument"):
            load_reward_model("no-args-factory", device="cpu")
        with pytest.raises(RewardModelError, match=r"asked for dtype=torch.bfloat16"):
            load_reward_model("device-only-factory", dtype="bf16")
    finally:
        unregister_reward_model("no-args-factory")
        unregister_reward_model("device-only-factory")


def test_factory_that_needs_other_arguments_is_refused_at_registration(tokenizer):
    with pytest.raises(RewardModelError, match=r"requires argument\(s\) \['path'\].*device=, dtype=, trust_remote_code="):
        register_reward_model("needs-a-path", lambda path: None)
