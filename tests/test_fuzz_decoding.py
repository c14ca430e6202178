"""Property-based guard over the whole decoder: random prompts, stops, budgets and knobs on tiny models.

Invariants, for every draw (two policy architectures, shared-vocabulary and cross-tokenizer
reward models, all strategies, refinement modes and nudge scoring modes):

- the only exceptions are the package's documented errors (``GGROError`` subclasses), and none of
  them wraps an unexpected internal exception;
- no stop sequence appears in the text;
- the streamed text (and tokens) equal ``generate``'s;
- the token budget holds;
- every event's chosen token is the first token of the committed segment at its position, or, when
  that segment was emptied by a stop sequence (the legal "end here" candidate), the response ends
  at that position with ``finish_reason == "stop"``;
- rewards are finite.

Profiles (``HYPOTHESIS_PROFILE``): ``ci`` (default) is derandomised, so CI runs the same examples
every time, sized to about a minute on a busy two-core machine; ``long`` draws many more, at
random (a failure prints the ``--hypothesis-seed=N`` that reproduces it, and with
``print_blob`` the ``@reproduce_failure`` line for the exact example). ``dev`` is ``long`` with
fewer examples, for a quick random look.
"""

from __future__ import annotations

import math
import os

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ggro_integrations import GGRODecoder, GGROError, TextDelta  # noqa: E402
from ggro_integrations.rewards import HFRewardModel  # noqa: E402
from ggro_integrations.testing import tiny_causal_lm, tiny_reward_model, tiny_tokenizer  # noqa: E402

_COMMON = {
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("ci", max_examples=500, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=2000, **_COMMON)
settings.register_profile("dev", max_examples=200, **_COMMON)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")

CONTROL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<pad>", "<|im_start|>system\n", "<|im_end|>\n"]
TEXT = st.lists(st.sampled_from(list("the cat sat on a mat.,!?\n éüß中文🙂") + CONTROL), max_size=12).map("".join)
# Short stops built from frequent characters, so that they are actually hit.
STOP = st.lists(st.sampled_from(list(" eatso.,\n") + ["<|im_end|>", "é", "中"]), min_size=1, max_size=3).map("".join)


@st.composite
def prompts(draw):
    if draw(st.booleans()):
        return draw(st.sampled_from(["Hi", "Tell me", "中文", "<|im_start|>"])) + " " + draw(TEXT)
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(TEXT)})
    for _ in range(draw(st.integers(1, 2))):
        messages.append({"role": "user", "content": draw(TEXT)})
        if draw(st.booleans()):
            messages.append({"role": "assistant", "content": draw(TEXT)})
    if draw(st.booleans()):
        # Text blocks, as LangChain / OpenAI-style clients send them.
        messages[-1] = {**messages[-1], "content": [{"type": "text", "text": draw(TEXT)}, draw(TEXT)]}
    return messages


CALLS = st.fixed_dictionaries(
    {
        "strategy": st.sampled_from(["ggro", "ggro", "ggro", "greedy", "best_of_n"]),
        "max_new_tokens": st.integers(1, 14),
        "stop": st.lists(STOP, max_size=2),
        "entropy_threshold": st.sampled_from([0.0, 0.5, 1.0, 2.0, 50.0]),
        "num_refinements": st.integers(0, 3),
        "nudge_top_k": st.integers(1, 5),
        "min_segment_tokens": st.integers(1, 3),
        "refinement": st.sampled_from(["sequential", "parallel"]),
        "nudge_scoring": st.sampled_from(["gradient", "exact"]),
        "nudge_selection": st.sampled_from(["greedy", "sample"]),
        "temperature": st.sampled_from([0.0, 0.0, 0.9]),
        "seed": st.integers(0, 3),
        "best_of_n": st.integers(1, 3),
        "use_chat_template": st.sampled_from([None, False]),
    }
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def decoders():
    tokenizer, foreign = tiny_tokenizer(), tiny_tokenizer(vocab_size=512, seed=7)
    rewards = {
        "shared": HFRewardModel(tiny_reward_model(tokenizer, seed=3), tokenizer, name="shared-rm"),
        "cross": HFRewardModel(tiny_reward_model(foreign, "qwen2", seed=4), foreign, name="cross-rm"),
    }
    policies = {arch: tiny_causal_lm(tokenizer, arch, seed=11) for arch in ("llama", "qwen2")}
    return {(a, r): GGRODecoder(p, tokenizer, rewards[r]) for a, p in policies.items() for r in rewards}


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _unset_or_finite(value) -> bool:
    # Rewards an event does not compute (no refinements: nothing is scored) are None.
    return value is None or math.isfinite(value)


def _stop_from_output(decoder: GGRODecoder, prompt, call: dict, pick: tuple[float, int]) -> list[str]:
    """A stop taken from what the policy writes unconstrained (``pick``: where, how long): these are
    actually hit, by the base segment and by nudged candidates alike (the "emptied candidate" case
    of commit e091183)."""
    try:
        text = decoder.generate(prompt, **{**call, "strategy": "greedy", "stop": ()}).text
    except GGROError:
        return []
    where, length = pick
    start = min(int(where * len(text)), max(len(text) - 1, 0))
    return [text[start : start + length]] if text else []


def _check(decoder: GGRODecoder, prompt, call: dict) -> None:
    try:
        result = decoder.generate(prompt, **call)
    except GGROError as exc:
        # Documented errors only, and never a wrapped internal fault.
        assert exc.__cause__ is None or isinstance(exc.__cause__, GGROError), repr(exc.__cause__)
        hypothesis.event(f"error: {type(exc).__name__}")
        return
    hypothesis.event(f"finish: {result.finish_reason}")
    hypothesis.event(f"interventions: {min(len(result.interventions), 3)}")
    text, tokens = result.text, result.token_ids
    assert len(tokens) <= call["max_new_tokens"]
    for stop in call["stop"]:
        assert stop not in text, (stop, text)
    assert _finite(result.reward)
    assert all(_finite(s["reward"]) for s in result.samples or [])
    for event in result.interventions:
        scored = call["num_refinements"] > 0
        assert (_finite if scored else _unset_or_finite)(event.base_reward)
        assert (_finite if scored else _unset_or_finite)(event.best_reward)
        assert all((_finite if scored else _unset_or_finite)(c.reward) for c in event.candidates)
        if event.position < len(tokens):
            assert tokens[event.position] == event.chosen_token_id, (event.position, tokens, event.to_dict())
        else:  # the accepted candidate is "end here": a stop sequence emptied its segment
            hypothesis.event("accepted an emptied candidate")
            assert event.position == len(tokens) and result.finish_reason == "stop", event.to_dict()
    positions = [e.position for e in result.interventions]
    assert positions == sorted(set(positions))
    if call["strategy"] != "best_of_n":
        stream = decoder.stream(prompt, **{k: v for k, v in call.items() if k != "best_of_n"})
        deltas = [item for item in stream if isinstance(item, TextDelta)]
        assert "".join(d.text for d in deltas) == text
        assert [t for d in deltas for t in d.token_ids] == tokens
        assert stream.result is not None and stream.result.token_ids == tokens


_PINNED = {
    "strategy": "ggro", "stop": [], "entropy_threshold": 0.0, "num_refinements": 0, "nudge_top_k": 1,
    "min_segment_tokens": 1, "refinement": "sequential", "nudge_scoring": "gradient", "nudge_selection": "greedy",
    "temperature": 0.0, "seed": 0, "best_of_n": 1,
}
"""The knobs of the pinned examples below (the falsifying examples Hypothesis found, shrunk)."""


@settings(settings.get_profile(PROFILE))
@given(
    model=st.sampled_from([("llama", "shared"), ("qwen2", "shared"), ("llama", "cross"), ("qwen2", "cross")]),
    prompt=prompts(),
    call=CALLS,
    stop_from_output=st.none() | st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 3)),
)
# Found by this test: a response ending in a special token (no text) lost that token from the stream.
@example(
    model=("qwen2", "shared"),
    prompt=[
        {"role": "system", "content": "<|endoftext|>"},
        {"role": "user", "content": ""},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": [{"type": "text", "text": ""}, "ht ?<|im_end|>"]},
    ],
    call={**_PINNED, "max_new_tokens": 11, "use_chat_template": False},
    stop_from_output=None,
)
# Found by this test: a stop sequence running through a multi-byte character ("rꄩ%") was partly
# streamed ("r" released while the character's bytes were incomplete) ...
@example(
    model=("qwen2", "shared"),
    prompt="Hi <|im_start|><|im_start|>system\n",
    call={**_PINNED, "max_new_tokens": 8, "use_chat_template": None},
    stop_from_output=(0.25, 3),
)
# ... and one ending in such a character ("sԗ") was not found at all.
@example(
    model=("qwen2", "shared"),
    prompt="Hi <|im_start|><|endoftext|>",
    call={**_PINNED, "max_new_tokens": 5, "use_chat_template": None},
    stop_from_output=(0.5, 2),
)
def test_decoding_invariants(decoders, model, prompt, call, stop_from_output):
    decoder = decoders[model]
    if stop_from_output is not None:
        call = {**call, "stop": call["stop"] + _stop_from_output(decoder, prompt, call, stop_from_output)}
    _check(decoder, prompt, call)
