"""The client against a real llama.cpp server serving the embedded default's GGUF (SmolLM2-135M, Q4_1).

Compared with the in-process transformers policy on the converted checkpoint: the
same weights, dequantized to float32. llama.cpp computes with the quantized weights
(and quantizes activations for the Q4_1 dot products), so log-probabilities agree to
a measured tolerance, not bit for bit.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from typing import Any

import httpx
import pytest

from ggro_integrations.backends.server import (
    AsyncServerClient,
    CompletionRequest,
    RequestCancelled,
    ServerClient,
    ServerDisconnectedError,
    ServerRequestError,
    ServerVocabularyError,
    entropy_bounds,
)
from ggro_integrations.backends.server.llama_server import find_llama_server

from llama_fixtures import IN_CI, start_server

pytestmark = pytest.mark.slow

PROMPTS = [
    "What is the capital of Australia?",
    "Give me three tips for sleeping better.",
    "How do I kill a stuck process on Linux?",
]
GREEDY_TOKENS = 24
# Measured here over five prompts (docs/scaling-out.md): at positions sharing the prefix,
# the chosen token's log-probability differed by at most 0.17 nats between llama.cpp's
# Q4_1 kernels and float32 transformers, any top-20 probability by at most 0.084, and the
# exact in-process entropy fell outside the server's top-20 bounds by at most 0.12 nats.
# About twice that leaves room for other CPUs' kernels, while a wrong distribution (a
# temperature applied, post-sampling probabilities, a missing normalisation) is off by more.
TOP1_TOL = 0.3
PROB_TOL = 0.15
ENTROPY_TOL = 0.25


def chat_ids(tokenizer: Any, text: str) -> list[int]:
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(rendered, add_special_tokens=False)


def inprocess_greedy(model: Any, tokenizer: Any, ids: list[int], n: int) -> tuple[list[int], list[Any]]:
    """Greedy tokens and the full log-softmax at each generated position (raw logits)."""
    import torch

    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]), do_sample=False, max_new_tokens=n, output_logits=True,
            return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id,
        )
    tokens = out.sequences[0, len(ids):].tolist()
    return tokens, [torch.log_softmax(step[0].float(), -1) for step in out.logits]


@pytest.fixture(scope="module")
def client(llama_server: Any) -> Any:
    with ServerClient(llama_server.url, timeout=300) as c:
        yield c


@pytest.fixture(scope="module")
def compared(client: ServerClient, smollm: tuple[Any, Any]) -> list[dict[str, Any]]:
    """Each prompt decoded greedily by the server (through the client) and in-process."""
    model, tokenizer = smollm
    rows = []
    for text in PROMPTS:
        ids = chat_ids(tokenizer, text)
        server = client.complete(CompletionRequest(prompt=ids, max_tokens=GREEDY_TOKENS, top_logprobs=20))
        tokens, logprobs = inprocess_greedy(model, tokenizer, ids, GREEDY_TOKENS)
        rows.append({"text": text, "ids": ids, "server": server, "tokens": tokens, "logprobs": logprobs})
    return rows


def aligned(row: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(server position, in-process log-softmax) pairs up to and including the first divergence."""
    pairs = []
    for pos, ours, logp in zip(row["server"].positions, row["tokens"], row["logprobs"]):
        pairs.append((pos, logp))
        if pos.token_id != ours:
            break
    return pairs


def test_a_server_is_installed_under_ci() -> None:
    """`make test` installs a llama.cpp server; CI must never silently skip these tests."""
    if not IN_CI:
        pytest.skip("only enforced under CI=true")
    assert find_llama_server() is not None, "no llama.cpp server in CI: `make install` should have installed xllamacpp"


def test_check_reports_the_served_model(client: ServerClient, smollm: tuple[Any, Any]) -> None:
    _, tokenizer = smollm
    info = client.check(tokenizer, top_logprobs=20)
    assert info.vocab_size == 49152 and info.slots == 4  # -np 4
    assert info.vocabulary_checked and info.max_top_logprobs_checked == 20
    assert info.model and info.model.endswith(".gguf")


def test_a_different_tokenizer_is_refused(client: ServerClient) -> None:
    from ggro_integrations.testing import tiny_tokenizer

    with pytest.raises(ServerVocabularyError, match="tokenizes differently"):
        client.check(tiny_tokenizer())


def test_greedy_equals_the_servers_own_greedy(client: ServerClient, smollm: tuple[Any, Any]) -> None:
    """The client's neutral sampling settings decode exactly what llama-server's own temperature-0 decoding does."""
    _, tokenizer = smollm
    for text in PROMPTS[:2]:
        ids = chat_ids(tokenizer, text)
        ours = client.complete(CompletionRequest(prompt=ids, max_tokens=20, top_logprobs=5))
        native = httpx.post(
            client.base_url + "/completion",
            json={"prompt": ids, "n_predict": 20, "temperature": 0, "return_tokens": True},
            timeout=300,
        ).json()
        assert list(ours.token_ids) == native["tokens"]
        assert ours.finish_reason == ("stop" if native["stop_type"] == "eos" else "length")
        with client.stream(CompletionRequest(prompt=ids, max_tokens=20, top_logprobs=5)) as stream:
            streamed = [p.token_id for p in stream]
        assert streamed == native["tokens"]
        # the chosen token is the argmax of the reported distribution
        for position in ours.positions:
            assert position.token_id == position.top[0].token_id


def test_eos_ends_with_stop_and_is_a_position(client: ServerClient, smollm: tuple[Any, Any]) -> None:
    _, tokenizer = smollm
    result = client.complete(CompletionRequest(prompt=chat_ids(tokenizer, PROMPTS[0]), max_tokens=40))
    assert result.finish_reason == "stop"
    assert result.token_ids[-1] == tokenizer.eos_token_id and result.positions[-1].has_distribution


def test_greedy_equals_inprocess_transformers(compared: list[dict[str, Any]]) -> None:
    """Same tokens as transformers greedy on the dequantized checkpoint, except at a near-tie.

    A divergence is only acceptable where the in-process top-2 log-probabilities are
    closer than the measured numerical difference between the two implementations.
    """
    for row in compared:
        server = list(row["server"].token_ids)
        ours = row["tokens"]
        first = next((i for i, (a, b) in enumerate(zip(server, ours)) if a != b), None)
        if first is None:
            assert server == ours[: len(server)]
            continue
        top2 = row["logprobs"][first].topk(2).values
        gap = float(top2[0] - top2[1])
        assert gap < TOP1_TOL, f"{row['text']!r}: diverged at {first} with a top-2 gap of {gap:.3f} nats"


def test_topn_logprobs_match_inprocess_log_softmax(compared: list[dict[str, Any]]) -> None:
    worst_prob = worst_top1 = 0.0
    for row in compared:
        for pos, logp in aligned(row):
            assert len(pos.top) == 20
            for cand in pos.top:
                worst_prob = max(worst_prob, abs(math.exp(cand.logprob) - float(logp[cand.token_id].exp())))
            worst_top1 = max(worst_top1, abs(pos.logprob - float(logp[pos.token_id])))
    assert worst_top1 < TOP1_TOL, f"chosen-token log-probabilities differ by up to {worst_top1:.4f} nats"
    assert worst_prob < PROB_TOL, f"top-20 probabilities differ by up to {worst_prob:.4f}"


def test_entropy_bounds_bracket_the_exact_inprocess_entropy(compared: list[dict[str, Any]]) -> None:
    for row in compared:
        for pos, logp in aligned(row):
            exact = float(-(logp.exp() * logp).sum())
            lower, upper, _, _ = entropy_bounds([math.exp(c.logprob) for c in pos.top], 49152)
            assert lower - ENTROPY_TOL <= exact <= upper + ENTROPY_TOL


def test_prefix_cache_is_reused(client: ServerClient, smollm: tuple[Any, Any]) -> None:
    """A continuation of prompt + committed tokens recomputes only the new tokens."""
    _, tokenizer = smollm
    ids = chat_ids(tokenizer, PROMPTS[1])
    first = client.complete(CompletionRequest(prompt=ids, max_tokens=6, top_logprobs=5))
    fork = client.complete(CompletionRequest(prompt=ids + list(first.token_ids[:5]), max_tokens=3, top_logprobs=5))
    assert fork.cached_prompt_tokens is not None and fork.prompt_tokens == len(ids) + 5
    assert fork.prompt_tokens - fork.cached_prompt_tokens <= 2


def test_bad_request_quotes_the_server(client: ServerClient) -> None:
    with pytest.raises(ServerRequestError, match="HTTP 400.*invalid tokens"):
        client.complete(CompletionRequest(prompt=[10**6], max_tokens=2))


def slot_busy(url: str) -> list[dict[str, Any]]:
    return [s for s in httpx.get(url + "/slots", timeout=10).json() if s.get("is_processing")]


def wait_until(condition: Any, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


LONG = 2000  # far more tokens than the test waits for: only an abort ends the request early


def long_request(tokenizer: Any) -> CompletionRequest:
    return CompletionRequest(prompt=chat_ids(tokenizer, "Write a very long story."), max_tokens=LONG,
                             top_logprobs=5, ignore_eos=True)


async def test_cancelling_a_streaming_task_aborts_the_request(llama_server: Any, smollm: tuple[Any, Any]) -> None:
    _, tokenizer = smollm

    async def consume(client: AsyncServerClient) -> None:
        async with client.stream(long_request(tokenizer)) as stream:
            async for _ in stream:
                pass

    async with AsyncServerClient(llama_server.url, timeout=300) as client:
        task = asyncio.create_task(consume(client))
        await asyncio.to_thread(wait_until, lambda: slot_busy(llama_server.url), 120)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    stopped_after = await asyncio.to_thread(wait_until, lambda: not slot_busy(llama_server.url), 15)
    assert stopped_after < 10


# Measured here with a raw socket close: neither llama-server b11434 nor xllamacpp 2026.10.11549
# stopped a non-streamed /completion (still generating 35 s and 120 s later), while streamed
# requests stop at once. Running it would leave the shared server's slot generating for the rest
# of the session; it is kept for engines that do abort (vLLM documents it).
@pytest.mark.skip(reason="llama.cpp servers here do not abort non-streamed requests on disconnect; use stream()")
async def test_cancelling_a_complete_task_aborts_the_request(llama_server: Any, smollm: tuple[Any, Any]) -> None:
    """A non-streamed request, aborted by closing its connection."""
    _, tokenizer = smollm
    async with AsyncServerClient(llama_server.url, timeout=300) as client:
        task = asyncio.create_task(client.complete(long_request(tokenizer)))
        await asyncio.to_thread(wait_until, lambda: slot_busy(llama_server.url), 120)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    stopped_after = await asyncio.to_thread(wait_until, lambda: not slot_busy(llama_server.url), 15)
    assert stopped_after < 10


def test_cancel_event_aborts_a_sync_request(llama_server: Any, smollm: tuple[Any, Any]) -> None:
    _, tokenizer = smollm
    cancel = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        with ServerClient(llama_server.url, timeout=300) as client:
            try:
                client.complete(long_request(tokenizer), cancel=cancel)
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    wait_until(lambda: slot_busy(llama_server.url), 120)
    cancel.set()
    worker.join(timeout=60)
    assert not worker.is_alive() and isinstance(errors[0], RequestCancelled)
    assert wait_until(lambda: not slot_busy(llama_server.url), 15) < 10


def test_leaving_a_stream_early_aborts_it(client: ServerClient, llama_server: Any, smollm: tuple[Any, Any]) -> None:
    _, tokenizer = smollm
    with client.stream(long_request(tokenizer)) as stream:
        for i, _ in enumerate(stream):
            if i == 3:
                break
    assert wait_until(lambda: not slot_busy(llama_server.url), 15) < 10


async def test_concurrent_requests_are_served_together(llama_server: Any, smollm: tuple[Any, Any]) -> None:
    """Four concurrent greedy requests on four slots: each gets its own complete continuation."""
    _, tokenizer = smollm
    texts = PROMPTS + ["Why is the sky blue?"]
    requests = [CompletionRequest(prompt=chat_ids(tokenizer, t), max_tokens=8, top_logprobs=5) for t in texts]
    async with AsyncServerClient(llama_server.url, timeout=300) as client:
        together = await asyncio.gather(*(client.complete(r) for r in requests))
        alone = [await client.complete(r) for r in requests]
    for a, b in zip(together, alone):
        assert len(a.positions) == len(b.positions) and a.finish_reason == b.finish_reason
        # llama.cpp's batched kernels are not bit-identical to single-sequence ones: tokens
        # may only differ after a near-tie in the single-sequence distribution.
        for pa, pb in zip(a.positions, b.positions):
            if pa.token_id != pb.token_id:
                assert pb.top[0].logprob - pb.top[1].logprob < TOP1_TOL
                break


def test_server_killed_mid_request_is_an_error_not_partial_output(gguf_path: Any, tmp_path: Any,
                                                                   smollm: tuple[Any, Any]) -> None:
    _, tokenizer = smollm
    server = start_server(gguf_path, tmp_path, parallel=1)
    outcome: list[Any] = []

    def run() -> None:
        with ServerClient(server.url, timeout=300) as client:
            try:
                outcome.append(client.complete(long_request(tokenizer)))
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        wait_until(lambda: slot_busy(server.url), 120)
        server.kill()
        worker.join(timeout=60)
    finally:
        server.stop()
    assert not worker.is_alive()
    assert isinstance(outcome[0], ServerDisconnectedError), outcome[0]
    assert "No partial output" in str(outcome[0]) and "server is down" in str(outcome[0])


@pytest.mark.skipif(not os.environ.get("GGRO_SERVER_SPEED"), reason="set GGRO_SERVER_SPEED=1 to print throughput")
def test_print_throughput(client: ServerClient, smollm: tuple[Any, Any]) -> None:  # pragma: no cover - a measurement
    model, tokenizer = smollm
    ids = chat_ids(tokenizer, "Write a short poem about the sea.")
    t0 = time.perf_counter()
    result = client.complete(CompletionRequest(prompt=ids, max_tokens=64, top_logprobs=20, ignore_eos=True))
    server_tps = len(result.positions) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    tokens, _ = inprocess_greedy(model, tokenizer, ids, 64)
    local_tps = len(tokens) / (time.perf_counter() - t0)
    print(f"\nserver {server_tps:.1f} tok/s, in-process {local_tps:.1f} tok/s")
