"""Regression tests for the crashes and silent wrong results of issue 10 (reward and prompt side).

Every case used to end in a raw torch / Jinja / Python error or in a silently wrong answer;
each must now be one of the package's documented errors, naming the parameter or model at fault.
"""

from __future__ import annotations

import math

import pytest
import torch

from ggro_integrations import GGRODecoder, PromptError, RewardModelError
from ggro_integrations.conversation import as_conversation
from ggro_integrations.rewards import (
    CompositeReward,
    EmbeddingReward,
    HFRewardModel,
    RewardModel,
    RewardScores,
    RewardSession,
    TextScorerReward,
    load_reward_model,
    register_reward_model,
    unregister_reward_model,
)
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


# -- 3. message content of the wrong type ------------------------------------------------------------


@pytest.mark.parametrize(
    "content, kind", [(123, "int"), ({"text": "hi"}, "dict"), (b"hi", "bytes"), (["hi", 3], "'int'")]
)
def test_wrong_content_types_name_the_message(content, kind):
    with pytest.raises(PromptError, match=rf"prompt\[0\]\['content'\].*{kind}"):
        as_conversation([{"role": "system", "content": content}, {"role": "user", "content": "hi"}])


def test_non_text_blocks_are_refused():
    image = {"type": "image_url", "image_url": {"url": "http://x/y.png"}}
    with pytest.raises(PromptError, match=r"prompt\[1\]\['content'\]\[1\] is a 'image_url' block"):
        as_conversation([{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "a"}, image]}])


def test_text_blocks_are_joined(policy, tokenizer):
    blocks = [{"type": "text", "text": "Hello "}, "there, ", {"type": "text", "text": "friend"}]
    assert as_conversation([{"role": "user", "content": blocks}])[0]["content"] == "Hello there, friend"
    decoder = GGRODecoder(policy, tokenizer, None, num_refinements=0, max_new_tokens=3)
    with_blocks = decoder.generate([{"role": "user", "content": blocks}])
    assert with_blocks.token_ids == decoder.generate("Hello there, friend").token_ids


def test_wrong_content_through_the_decoder(policy, tokenizer):
    decoder = GGRODecoder(policy, tokenizer, None, num_refinements=0, max_new_tokens=3)
    with pytest.raises(PromptError, match=r"prompt\[0\]\['content'\] must be a string .* got int"):
        decoder.generate([{"role": "system", "content": 123}, {"role": "user", "content": "hi"}])


# -- 4. non-finite rewards and gradients ----------------------------------------------------------------


class _Scale(torch.nn.Module):
    def __init__(self, head: torch.nn.Module, factor: float) -> None:
        super().__init__()
        self.head, self.factor = head, factor

    def forward(self, x):
        return self.head(x) * self.factor


def _nan_reward(tokenizer, factor=math.nan, name="nan-rm"):
    model = tiny_reward_model(tokenizer)
    model.score = _Scale(model.score, factor)
    return HFRewardModel(model, tokenizer, name=name)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("factor", [math.nan, math.inf])
def test_non_finite_hf_reward_is_an_error(policy, tokenizer, strategy, factor):
    decoder = GGRODecoder(policy, tokenizer, _nan_reward(tokenizer, factor), max_new_tokens=6, **TRIGGER_ALWAYS)
    with pytest.raises(RewardModelError, match="reward model 'nan-rm'.*non-finite"):
        decoder.generate(PROMPT, strategy=strategy)


def test_non_finite_component_is_named(policy, tokenizer, reward_hf_model):
    good = HFRewardModel(reward_hf_model, tokenizer, name="good")
    composite = CompositeReward([(good, 1.0), (_nan_reward(tokenizer, name="broken"), 0.5)])
    decoder = GGRODecoder(policy, tokenizer, composite, max_new_tokens=6, **TRIGGER_ALWAYS)
    with pytest.raises(RewardModelError, match="reward model 'broken'"):
        decoder.generate(PROMPT)


class _Session(RewardSession):
    """A custom session whose answers are whatever the test asks for."""

    def __init__(self, scores=None, gains=None) -> None:
        super().__init__()
        self._scores, self._gains = scores, gains

    def score(self, prefix, continuations):
        values = self._scores(len(continuations)) if self._scores else torch.zeros(len(continuations))
        return values if not isinstance(values, torch.Tensor) else RewardScores(values)

    def gradient_gains(self, prefix, continuation, candidates):
        return self._gains(len(candidates)) if self._gains else torch.ones(len(candidates))


class _Custom(RewardModel):
    name = "custom-rm"

    def __init__(self, **answers) -> None:
        self.answers = answers

    def session(self, conversation, policy_tokenizer):
        return _Session(**self.answers)


@pytest.mark.parametrize(
    "answers, message",
    [
        ({"scores": lambda n: torch.full((n,), math.nan)}, "non-finite scores"),
        ({"gains": lambda n: torch.full((n,), math.inf)}, "non-finite gains"),
        ({"gains": lambda n: torch.ones(max(1, n - 3))}, r"one gain per candidate: expected shape \[\d+\], got"),
        ({"gains": lambda n: torch.ones(n + 1)}, "one gain per candidate"),
        ({"scores": lambda n: torch.zeros(n + 1)}, "one score per response"),
        ({"scores": lambda n: [0.0] * n}, "must return RewardScores"),
        ({"gains": lambda n: 1 / 0}, "raised ZeroDivisionError"),
    ],
)
@pytest.mark.parametrize("refinement", ["sequential", "parallel"])
def test_custom_session_answers_are_checked(policy, tokenizer, answers, message, refinement):
    decoder = GGRODecoder(policy, tokenizer, _Custom(**answers), max_new_tokens=8, refinement=refinement, **TRIGGER_ALWAYS)
    with pytest.raises(RewardModelError, match=f"reward model 'custom-rm'.*{message}"):
        decoder.generate(PROMPT)


def test_checked_custom_session_still_steers(policy, tokenizer):
    # A well-behaved custom session is untouched by the checks: every candidate is tried.
    decoder = GGRODecoder(policy, tokenizer, _Custom(), max_new_tokens=8, refinement="parallel", **TRIGGER_ALWAYS)
    result = decoder.generate(PROMPT)
    assert result.interventions and all(e.refinements_used == 2 for e in result.interventions)


def test_text_scorer_nan_is_still_reported(policy, tokenizer):
    reward = TextScorerReward(lambda prompt, responses: [math.nan] * len(responses), name="nan-scorer")
    decoder = GGRODecoder(policy, tokenizer, reward, nudge_scoring="exact", max_new_tokens=4, **TRIGGER_ALWAYS)
    with pytest.raises(RewardModelError, match="nan-scorer.*non-finite"):
        decoder.generate(PROMPT)


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


# -- 12. an EmbeddingReward without a gradient --------------------------------------------------------------


@pytest.mark.parametrize(
    "scorer",
    [
        lambda e, m: torch.zeros(e.shape[0]),  # a constant: does not use the embeddings at all
        lambda e, m: e.detach()[..., 0].sum(-1),  # detached
        lambda e, m: torch.tensor([float(e[0, 0, 0])] * e.shape[0]),  # through Python floats
    ],
)
def test_embedding_reward_without_gradient_says_what_to_return(policy, tokenizer, scorer):
    reward = EmbeddingReward(scorer, torch.randn(len(tokenizer), 4), tokenizer, name="no-grad")
    decoder = GGRODecoder(policy, tokenizer, reward, max_new_tokens=4, **TRIGGER_ALWAYS)
    with pytest.raises(RewardModelError, match="'no-grad'.*must compute its \\[batch\\] tensor from the inputs_embeds"):
        decoder.generate(PROMPT)
