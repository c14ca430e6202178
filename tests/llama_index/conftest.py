"""Fixtures for the LlamaIndex adapter: tiny in-process models, event and span recorders."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

pytest.importorskip("llama_index.core")

import llama_index.core
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.span import SimpleSpan
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from pydantic import Field

from ggro_integrations import GGRODecoder, RewardModelError
from ggro_integrations.llama_index import GGROLLM
from ggro_integrations.rewards import HFRewardModel, RewardModel, RewardSession
from ggro_integrations.rewards.registry import register_reward_model
from ggro_integrations.testing import tiny_causal_lm, tiny_reward_model, tiny_tokenizer

# A prompt on which the tiny policy triggers several times and GGRO accepts nudges.
PROMPT = "How do I sharpen a knife?"
CONFIG = {"entropy_threshold": 1.0, "num_refinements": 4, "max_new_tokens": 16, "seed": 0}
SECOND_RM = "llama-index-test-rm-b"
CONVERSATION = [{"role": "system", "content": "You answer in one sentence."}, {"role": "user", "content": PROMPT}]


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine two
    spinning threads make them several times slower. One setting everywhere also keeps float
    reductions, hence rewards and entropies, bit-identical between reference and adapter."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Any:
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def li_tokenizer() -> Any:
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def li_policy(li_tokenizer: Any) -> Any:
    return tiny_causal_lm(li_tokenizer, "llama")


@pytest.fixture(scope="session")
def li_reward(li_tokenizer: Any) -> HFRewardModel:
    return HFRewardModel(tiny_reward_model(li_tokenizer, "llama", seed=1), li_tokenizer, name="tiny-rm-a")


@pytest.fixture(scope="session")
def li_reward_b(li_tokenizer: Any) -> HFRewardModel:
    """A second reward model, registered by name for per-call selection."""
    reward = HFRewardModel(tiny_reward_model(li_tokenizer, "llama", seed=5), li_tokenizer, name="tiny-rm-b")
    register_reward_model(SECOND_RM, lambda **_: reward, overwrite=True)
    return reward


@pytest.fixture(scope="session")
def decoder(li_policy: Any, li_tokenizer: Any, li_reward: HFRewardModel) -> GGRODecoder:
    return GGRODecoder(li_policy, li_tokenizer, li_reward, **CONFIG)


@pytest.fixture(scope="session")
def expected(decoder: GGRODecoder) -> Any:
    """The core decoder's own result for ``PROMPT``: the reference GGROLLM must reproduce."""
    with one_torch_thread():
        return decoder.generate(PROMPT)


@pytest.fixture(scope="session")
def expected_chat(decoder: GGRODecoder) -> Any:
    """The core decoder's own result for ``CONVERSATION``."""
    with one_torch_thread():
        return decoder.generate(CONVERSATION)


@pytest.fixture()
def llm(decoder: GGRODecoder, li_reward_b: HFRewardModel) -> GGROLLM:
    return GGROLLM(decoder=decoder)


def _long_window(model: Any, positions: int = 4096) -> Any:
    # LlamaIndex's default RAG prompts are ~400 tokens of English, which the 384-token tiny
    # vocabulary spells in far more tokens than a real one. Llama computes rotary positions on
    # the fly (no table to outgrow), so a longer declared window is all it takes.
    model.config.max_position_embeddings = positions
    return model


@pytest.fixture(scope="session")
def rag_decoder_parts(li_tokenizer: Any) -> tuple:
    policy = _long_window(tiny_causal_lm(li_tokenizer, "llama"))
    reward = HFRewardModel(
        _long_window(tiny_reward_model(li_tokenizer, "llama", seed=1)), li_tokenizer, name="tiny-rm-a"
    )
    return policy, reward


@pytest.fixture()
def rag_llm(rag_decoder_parts: tuple, li_tokenizer: Any) -> Any:
    """A GGROLLM with a 4096-token window; LlamaIndex counts prompt tokens with its tokenizer meanwhile."""
    policy, reward = rag_decoder_parts
    llm = GGROLLM(decoder=GGRODecoder(policy, li_tokenizer, reward, **{**CONFIG, "max_new_tokens": 8}))
    old = llama_index.core.global_tokenizer
    llama_index.core.global_tokenizer = llm.tokenize
    yield llm
    llama_index.core.global_tokenizer = old


class EventRecorder(BaseEventHandler):
    """Keeps every instrumentation event, in order."""

    events: list = Field(default_factory=list)

    def handle(self, event: Any, **kwargs: Any) -> None:
        self.events.append(event)

    def of_type(self, name: str) -> list:
        return [e for e in self.events if e.class_name() == name]


class SpanRecorder(BaseSpanHandler[SimpleSpan]):
    """Keeps the id and parent of every span that was entered."""

    parents: dict = Field(default_factory=dict)

    def new_span(self, id_: str, bound_args: Any, instance: Any = None, parent_span_id: Any = None, **kw: Any) -> Any:
        self.parents[id_] = parent_span_id
        return SimpleSpan(id_=id_, parent_id=parent_span_id)

    def prepare_to_exit_span(
        self, id_: str, bound_args: Any, instance: Any = None, result: Any = None, **kw: Any
    ) -> Any:
        return None

    def prepare_to_drop_span(self, id_: str, bound_args: Any, instance: Any = None, err: Any = None, **kw: Any) -> Any:
        return None

    def ancestors(self, span_id: str) -> list[str]:
        out = []
        while (span_id := self.parents.get(span_id)) is not None:
            out.append(span_id)
        return out


@pytest.fixture()
def recorder() -> Any:
    root = get_dispatcher()
    events = EventRecorder()
    spans = SpanRecorder()
    root.add_event_handler(events)
    root.add_span_handler(spans)
    yield events, spans
    root.event_handlers.remove(events)
    root.span_handlers.remove(spans)


class SlowReward(RewardModel):
    """Delegates to ``inner`` but sleeps in every scoring call: makes decoding take measurable time."""

    def __init__(self, inner: RewardModel, delay: float, *, fail_after: int | None = None) -> None:
        self.inner, self.delay, self.name = inner, delay, f"slow-{inner.name}"
        self.fail_after = fail_after
        self.calls = 0
        """Scoring calls made so far, across sessions."""

    def session(self, conversation: Any, policy_tokenizer: Any) -> RewardSession:
        return _SlowSession(self, self.inner.session(conversation, policy_tokenizer))


class _SlowSession(RewardSession):
    def __init__(self, owner: SlowReward, inner: RewardSession) -> None:
        super().__init__()
        self.owner, self.inner = owner, inner
        self.usage = inner.usage

    def score(self, prefix: Sequence[int], continuations: Sequence[Sequence[int]]) -> Any:
        self.owner.calls += 1
        if self.owner.fail_after is not None and self.owner.calls > self.owner.fail_after:
            raise RewardModelError("the scorer broke mid-decoding")
        time.sleep(self.owner.delay)
        return self.inner.score(prefix, continuations)

    def gradient_gains(self, prefix: Sequence[int], continuation: Sequence[int], candidates: Sequence[int]) -> Any:
        return self.inner.gradient_gains(prefix, continuation, candidates)
