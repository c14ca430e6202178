"""GGRO with the policy on a real llama.cpp server (``ServerBackend``), the reward model in process.

The server serves the embedded default's GGUF (Q4_1); the in-process comparisons use
its converted float32 checkpoint: the same weights, so greedy tokens agree where no
near-tie flips, and the estimated top-20 entropy is compared with the exact one.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import pytest
import torch

from ggro_integrations import GGRODecoder, InterventionEvent, TextDelta
from ggro_integrations.backends import Sampling
from ggro_integrations.backends.server import (
    CompletionRequest,
    RetryPolicy,
    ServerDisconnectedError,
    ServerInternalError,
    ServerRequestError,
    ServerUnreachableError,
)
from ggro_integrations.backends.server.backend import ServerBackend
from ggro_integrations.backends.server.llama_server import free_port
from ggro_integrations.decoding.segments import SegmentRules
from ggro_integrations.decoding.stopping import StopSequences
from ggro_integrations.errors import ConfigError, GenerationCancelled
from ggro_integrations.rewards import EmbeddingReward

from fault_proxy import FaultProxy
from llama_fixtures import start_server

pytestmark = pytest.mark.slow

EOS = {2}  # <|im_end|>: the default's end of turn (the GGUF's EOS too)
PROMPTS = ["What is the capital of Australia?", "Give me three tips for sleeping better."]
MORE = ["How do I kill a stuck process on Linux?", "Write a short poem about the sea."]
FAST_RETRY = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.05)


def backend_for(url: str, tokenizer: Any, **kwargs: Any) -> ServerBackend:
    kwargs.setdefault("retry", FAST_RETRY)
    return ServerBackend(url, tokenizer, eos_ids=EOS, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def backend(llama_server: Any, smollm: tuple[Any, Any]) -> Any:
    b = backend_for(llama_server.url, smollm[1], request_tokens=8)  # short requests: continuations get exercised
    yield b
    b.close()


def token_counter(tokenizer: Any, token: int) -> EmbeddingReward:
    """Reward = how often ``token`` appears (linear in the embeddings, so its gradient points at it)."""
    table = torch.zeros(len(tokenizer), 1)
    table[token, 0] = 1.0
    return EmbeddingReward(lambda e, m: (e[..., 0] * m).sum(-1), table, tokenizer, name=f"count-{token}")


def server_greedy(backend: ServerBackend, ids: list[int], n: int) -> list[int]:
    """The server's own greedy completion, one request, cut at EOS (EOS excluded)."""
    result = backend.client.complete(CompletionRequest(prompt=ids, max_tokens=n, top_logprobs=1, stop_token_ids=EOS))
    return [t for t in result.token_ids if t not in EOS]


def test_greedy_through_the_backend_is_the_servers_greedy(backend: ServerBackend) -> None:
    decoder = GGRODecoder(backend=backend, max_new_tokens=28)
    for prompt in PROMPTS:
        result = decoder.generate(prompt, strategy="greedy")
        assert result.token_ids == server_greedy(backend, decoder.prompt_ids(prompt), 28), prompt
        stats = result.stats
        # requests of at most 8 tokens: 28 tokens (or EOS) take several, each reading the prefix from the cache
        assert stats.policy_forward_passes == math.ceil((stats.new_tokens + (result.finish_reason == "eos")) / 8)
        if stats.policy_forward_passes > 1:  # each continuation re-reads at most its last couple of tokens
            assert stats.policy_prompt_tokens_cached >= stats.prompt_tokens
            assert stats.policy_prompt_tokens_reprocessed <= stats.prompt_tokens + 2 * stats.policy_forward_passes


def test_ggro_yields_events_and_takes_the_nudge_a_planted_reward_asks_for(backend: ServerBackend) -> None:
    tokenizer = backend.tokenizer
    base = dict(max_new_tokens=24, entropy_threshold=2.5, min_segment_tokens=2, nudge_top_k=5)
    prompt = PROMPTS[1]
    monitor = GGRODecoder(backend=backend, **base).generate(prompt, num_refinements=0)
    assert monitor.interventions, "the prompt must reach a trigger"
    first = monitor.interventions[0]
    prefix = GGRODecoder(backend=backend).prompt_ids(prompt) + monitor.token_ids[: first.position]
    top = backend.client.complete(CompletionRequest(prompt=prefix, max_tokens=1, top_logprobs=5)).positions[0].top_ids
    assert top[0] == first.original_token_id
    planted = next(t for t in top[1:] if t not in monitor.token_ids and t not in EOS)
    decoder = GGRODecoder(backend=backend, reward_model=token_counter(tokenizer, planted), **base, num_refinements=2)
    stream = decoder.stream(prompt)
    items = list(stream)
    result = stream.result
    assert result is not None
    events = [i for i in items if isinstance(i, InterventionEvent)]
    assert events == result.interventions and events[0].position == first.position
    assert "".join(i.text for i in items if isinstance(i, TextDelta)) == result.text
    event = events[0]
    assert event.accepted and event.chosen_token_id == planted and event.best_reward > event.base_reward
    assert planted in result.token_ids and result.reward >= 1
    # rejected candidates' requests were aborted, not run to the end
    assert result.stats.policy_requests_aborted >= 1


def exact_and_estimated(backend: ServerBackend, model: Any, tokenizer: Any, prompt: str, n: int) -> list[tuple]:
    """Per position of the backend's greedy segment: (exact in-process entropy there, the backend's estimate).

    The exact entropies come from one teacher-forced forward of the float32 checkpoint over the
    server's tokens, so both are at the same positions even where a near-tie makes the two
    greedy paths part.
    """
    ids = GGRODecoder(backend=backend).prompt_ids(prompt)
    session = backend.open(ids, SegmentRules(tokenizer, math.inf, 1, EOS, StopSequences([]), n), Sampling())
    segment = session.decode([], session.start(), [None])[0]
    session.close()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids + segment.tokens])).logits[0, len(ids) - 1 :].float()
    logp = torch.log_softmax(logits, -1)
    exact = (-(logp.exp() * logp).sum(-1)).tolist()
    return list(zip(exact, segment.entropies))


def test_triggers_agree_with_the_in_process_backend_within_the_estimator_error(
    backend: ServerBackend, smollm: tuple[Any, Any]
) -> None:
    model, tokenizer = smollm
    tau = 3.0
    pairs = [p for prompt in PROMPTS + MORE for p in exact_and_estimated(backend, model, tokenizer, prompt, 40)]
    assert len(pairs) >= 80
    disagree = [(e, s) for e, s in pairs if (e >= tau) != (s >= tau)]
    # benchmarks/topn_entropy.py measured 98.3% agreement over 875 positions; the Q4_1 weights add
    # up to 0.12 nats (tests/server/test_llama_server.py). A wrong estimate (the head alone, a
    # temperature, post-sampling probabilities) misses by whole nats.
    assert len(disagree) <= max(2, 0.1 * len(pairs)), disagree
    assert all(abs(e - tau) < 0.6 for e, _ in disagree), disagree
    assert max(abs(e - s) for e, s in pairs if e < 1.0) < 0.3  # where the top-20 holds nearly all mass


def test_a_grammar_is_refused_up_front_with_the_reason(backend: ServerBackend) -> None:
    decoder = GGRODecoder(backend=backend)
    with pytest.raises(ConfigError, match="grammar= is not supported on ServerBackend"):
        decoder.prepare("Hi", grammar={"type": "object"})
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(ConfigError, match="tools= is not supported"):
        decoder.prepare("Hi", tools=[tool])


def test_best_of_n_samples_are_independent_and_seeded(backend: ServerBackend) -> None:
    decoder = GGRODecoder(backend=backend, reward_model=token_counter(backend.tokenizer, 30), max_new_tokens=8)
    runs = [decoder.generate(PROMPTS[1], strategy="best_of_n", best_of_n=4, temperature=1.0, seed=5) for _ in range(2)]
    assert [s["text"] for s in runs[0].samples] == [s["text"] for s in runs[1].samples]
    # each sample draws its own first token (not the first sample's), so they differ
    assert len({s["text"] for s in runs[0].samples}) > 1
    assert runs[0].reward == max(s["reward"] for s in runs[0].samples)


def busy_slots(url: str) -> int:
    import httpx

    return sum(bool(s.get("is_processing")) for s in httpx.get(url + "/slots", timeout=10).json())


def test_cancelling_a_generation_aborts_its_requests(llama_server: Any, smollm: tuple[Any, Any]) -> None:
    b = backend_for(llama_server.url, smollm[1], request_tokens=1000, check=False)
    decoder = GGRODecoder(backend=b, max_new_tokens=1000)
    stream = decoder.stream("Write a very long story about a lighthouse keeper.", strategy="greedy")
    items = iter(stream)
    next(items)  # the first token: its request is generating up to 1000 more
    assert busy_slots(llama_server.url) >= 1
    stream.cancel()
    with pytest.raises(GenerationCancelled):
        next(items)
    deadline = time.monotonic() + 10
    while busy_slots(llama_server.url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert busy_slots(llama_server.url) == 0
    assert stream.result is None
    b.close()


def test_server_down_is_a_clear_error(smollm: tuple[Any, Any]) -> None:
    with pytest.raises(ServerUnreachableError, match="cannot connect.*start the server"):
        backend_for(f"http://127.0.0.1:{free_port()}", smollm[1])


def test_4xx_is_the_servers_reason_not_a_retry(backend: ServerBackend, smollm: tuple[Any, Any]) -> None:
    # a context window claimed larger than the server's: the server rejects the prompt itself
    b = backend_for(backend.client.base_url, smollm[1], check=False, context_window=100_000)
    decoder = GGRODecoder(backend=b, max_new_tokens=4)
    stream = decoder.stream("word " * 1500, strategy="greedy")
    with pytest.raises(ServerRequestError, match="HTTP 400"):
        list(stream)
    assert stream.result is None
    b.close()


def test_5xx_is_retried_to_the_same_result_or_reported(llama_server: Any, backend: ServerBackend) -> None:
    tokenizer = backend.tokenizer
    want = GGRODecoder(backend=backend, max_new_tokens=12).generate(PROMPTS[0], strategy="greedy").token_ids
    with FaultProxy(llama_server.url) as proxy:
        b = backend_for(proxy.url, tokenizer, request_tokens=4, check=False)
        decoder = GGRODecoder(backend=b, max_new_tokens=12)
        proxy.statuses = [503, 500]  # two failures, the third attempt goes through
        assert decoder.generate(PROMPTS[0], strategy="greedy").token_ids == want
        assert proxy.faults == 2
        proxy.statuses = [500] * 3  # every attempt fails
        stream = decoder.stream(PROMPTS[0], strategy="greedy")
        with pytest.raises(ServerInternalError, match="HTTP 500 after 3 attempt"):
            list(stream)
        assert stream.result is None
        b.close()


def test_a_stream_cut_mid_generation_resumes_from_the_tokens_it_had(llama_server: Any, backend: ServerBackend) -> None:
    want = GGRODecoder(backend=backend, max_new_tokens=20).generate(PROMPTS[1], strategy="greedy").token_ids
    with FaultProxy(llama_server.url) as proxy:
        b = backend_for(proxy.url, backend.tokenizer, request_tokens=16, check=False)
        proxy.cuts = [5, 3]
        result = GGRODecoder(backend=b, max_new_tokens=20).generate(PROMPTS[1], strategy="greedy")
        assert proxy.faults == 2 and result.token_ids == want
        b.close()


def test_server_killed_mid_generation_is_an_error_not_partial_text(
    gguf_path: Any, tmp_path: Any, smollm: tuple[Any, Any]
) -> None:
    server = start_server(gguf_path, tmp_path, parallel=1)
    try:
        b = backend_for(server.url, smollm[1], request_tokens=1000, check=False)
        stream = GGRODecoder(backend=b, max_new_tokens=1000).stream("Write a very long story.", strategy="greedy")
        items = iter(stream)
        next(items)
        server.kill()
        with pytest.raises(ServerDisconnectedError, match="No partial output"):
            list(items)
        assert stream.result is None
        b.close()
    finally:
        server.stop()


def test_concurrent_generations_are_concurrent_requests(llama_server: Any, backend: ServerBackend) -> None:
    decoder = GGRODecoder(backend=backend, max_new_tokens=16)
    alone = {p: decoder.generate(p, strategy="greedy").token_ids for p in PROMPTS}
    results: dict[str, Any] = {}
    peak = [0]

    def run(prompt: str) -> None:
        results[prompt] = decoder.generate(prompt, strategy="greedy").token_ids

    threads = [threading.Thread(target=run, args=(p,)) for p in PROMPTS]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak[0] = max(peak[0], busy_slots(llama_server.url))
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert results == alone
    assert peak[0] >= 2  # both generations were on the server at once
