"""The client over real HTTP against scripted loopback servers: retries, errors, and the vLLM/SGLang dialects.

The vLLM and SGLang bodies follow those engines' documented formats (they cannot
run on these machines); llama-server's come from a real server in test_llama_server.py.
"""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from ggro_integrations.backends.server import (
    AsyncServerClient,
    CompletionRequest,
    IncompleteResponseError,
    LogprobsLimitError,
    RetryPolicy,
    ServerClient,
    ServerDisconnectedError,
    ServerInternalError,
    ServerRequestError,
    ServerTimeoutError,
    ServerUnreachableError,
    StreamGapError,
)
from ggro_integrations.backends.server.llama_server import free_port

from canned_http import CannedServer, Reply, Seen, llama_completion

FAST = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02)
REQ = CompletionRequest(prompt=[1, 2, 3], max_tokens=3, top_logprobs=2)


def test_5xx_is_retried_then_succeeds() -> None:
    def respond(seen: Seen, count: int) -> Reply:
        if count < 3:
            return Reply(500, {"error": {"code": 500, "message": "slot crashed"}})
        return Reply(200, llama_completion([5, 6, 7]))

    with CannedServer(respond) as server, ServerClient(server.url, retry=FAST) as client:
        result = client.complete(REQ)
    assert result.token_ids == (5, 6, 7)
    assert len(server.requests) == 3


def test_5xx_every_time_gives_a_clear_error_after_bounded_retries() -> None:
    with CannedServer(lambda s, c: Reply(503, {"error": {"message": "Loading model"}})) as server:
        with ServerClient(server.url, retry=FAST) as client, pytest.raises(ServerInternalError) as info:
            client.complete(REQ)
    assert len(server.requests) == FAST.attempts
    message = str(info.value)
    assert "HTTP 503" in message and "Loading model" in message and server.url in message
    assert info.value.status == 503


def test_backoff_grows_exponentially() -> None:
    policy = RetryPolicy(attempts=4, initial_delay=0.1, multiplier=2.0, max_delay=0.3)
    delays = [max(policy.delay(k) for _ in range(200)) for k in (1, 2, 3)]
    assert delays[0] <= 0.1 < delays[1] <= 0.2 < delays[2] <= 0.3


def test_4xx_is_not_retried_and_quotes_the_server() -> None:
    body = {"error": {"code": 400, "message": "n_predict must be positive", "type": "invalid_request_error"}}
    with CannedServer(lambda s, c: Reply(400, body)) as server:
        with ServerClient(server.url, retry=FAST) as client, pytest.raises(ServerRequestError) as info:
            client.complete(REQ)
    assert len(server.requests) == 1
    assert "n_predict must be positive" in str(info.value) and "HTTP 400" in str(info.value)


def test_vllm_logprobs_cap_names_the_flag() -> None:
    message = "Requested sample logprobs of 25, which is greater than max allowed: 20"
    with CannedServer(lambda s, c: Reply(400, {"object": "error", "message": message, "code": 400})) as server:
        with ServerClient(server.url, engine="vllm", model="m", retry=FAST) as client:
            with pytest.raises(LogprobsLimitError) as info:
                client.complete(CompletionRequest(prompt=[1], max_tokens=1, top_logprobs=25))
    assert "--max-logprobs 25" in str(info.value) and "max allowed: 20" in str(info.value)


def test_api_key_is_sent_but_never_shown() -> None:
    secret = "sk-very-secret-123"
    with CannedServer(lambda s, c: Reply(401, {"error": {"message": "Invalid API Key"}})) as server:
        client = ServerClient(server.url, api_key=secret, retry=FAST)
        with client, pytest.raises(ServerRequestError) as info:
            client.complete(REQ)
    assert server.requests[0].headers["authorization"] == f"Bearer {secret}"
    assert secret not in str(info.value) and secret not in repr(client)
    assert "api_key" in str(info.value)


def test_unreachable_server_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with ServerClient(url, retry=FAST) as client, pytest.raises(ServerUnreachableError) as info:
        client.complete(REQ)
    assert url in str(info.value) and "start the server" in str(info.value)
    assert time.monotonic() - start < 5


def test_connection_cut_mid_body_is_an_error_not_a_result() -> None:
    full = llama_completion([5, 6, 7])

    def respond(seen: Seen, count: int) -> Reply:
        return Reply(200, full, cut_after_bytes=40)

    with CannedServer(respond) as server:
        with ServerClient(server.url, retry=FAST) as client, pytest.raises(ServerDisconnectedError) as info:
            client.complete(REQ)
    assert "No partial output" in str(info.value)
    assert len(server.requests) == FAST.attempts  # nothing had been delivered: safe to resend


def test_cut_then_success_is_retried_transparently() -> None:
    def respond(seen: Seen, count: int) -> Reply:
        return Reply(200, llama_completion([5, 6, 7]), cut_after_bytes=40 if count == 1 else None)

    with CannedServer(respond) as server, ServerClient(server.url, retry=FAST) as client:
        assert client.complete(REQ).token_ids == (5, 6, 7)


def test_unfinished_llama_body_is_incomplete() -> None:
    body = llama_completion([5, 6, 7])
    body["stop"] = False
    with CannedServer(lambda s, c: Reply(200, body)) as server, ServerClient(server.url, retry=FAST) as client:
        with pytest.raises(IncompleteResponseError, match="not a finished completion"):
            client.complete(REQ)


def test_missing_probabilities_are_reported() -> None:
    body = llama_completion([5, 6, 7])
    del body["completion_probabilities"]
    with CannedServer(lambda s, c: Reply(200, body)) as server, ServerClient(server.url, retry=FAST) as client:
        with pytest.raises(IncompleteResponseError, match="no completion_probabilities"):
            client.complete(REQ)


def test_read_timeout_is_not_retried() -> None:
    with CannedServer(lambda s, c: Reply(200, llama_completion([5]), delay=1.5)) as server:
        with ServerClient(server.url, timeout=0.3, retry=FAST) as client, pytest.raises(ServerTimeoutError) as info:
            client.complete(REQ)
    assert "timeout=" in str(info.value)
    assert len(server.requests) == 1


def test_stream_ending_without_finish_is_an_error() -> None:
    chunk = {"completion_probabilities": llama_completion([5])["completion_probabilities"], "stop": False,
             "tokens_predicted": 1}
    with CannedServer(lambda s, c: Reply(200, sse=[chunk])) as server, ServerClient(server.url, retry=FAST) as client:
        got = []
        with pytest.raises(ServerDisconnectedError, match="without a finish reason"):
            with client.stream(REQ) as stream:
                for position in stream:
                    got.append(position.token_id)
    assert got == [5]


def test_llama_server_positions_without_probabilities_keep_their_place() -> None:
    """llama-server omits probabilities for tokens ending mid-UTF-8 character; ids come from ``tokens``."""
    body = llama_completion([7, 7])
    body["tokens"] = [173, 7, 242, 7, 99]  # 173, 242, 99: bytes of unfinished characters
    body["tokens_predicted"] = 5
    with CannedServer(lambda s, c: Reply(200, body)) as server, ServerClient(server.url, retry=FAST) as client:
        result = client.complete(CompletionRequest(prompt=[1], max_tokens=5, top_logprobs=2))
    assert result.token_ids == (173, 7, 242, 7, 99)
    assert [p.has_distribution for p in result.positions] == [False, True, False, True, False]
    assert math.isnan(result.positions[0].logprob)


def test_llama_stream_that_skips_a_token_says_so() -> None:
    """A streamed chunk whose tokens_predicted jumps: a token was generated but never sent."""
    probs = llama_completion([5, 6])["completion_probabilities"]
    chunks = [
        {"completion_probabilities": probs[:1], "tokens": [5], "stop": False, "tokens_predicted": 1},
        {"completion_probabilities": probs[1:], "tokens": [6], "stop": False, "tokens_predicted": 3},
    ]
    with CannedServer(lambda s, c: Reply(200, sse=chunks)) as server, ServerClient(server.url, retry=FAST) as client:
        got = []
        with pytest.raises(StreamGapError, match="after 1 that end mid-UTF-8"):
            with client.stream(REQ) as stream:
                for position in stream:
                    got.append(position.token_id)
    assert got == [5]


# -- vLLM ---------------------------------------------------------------------------


def vllm_body(tokens: list[int], finish: str = "length") -> dict:
    tops = []
    for t in tokens:
        # N = 2 asked; vLLM adds the sampled token when it is outside the top N
        tops.append({f"token_id:{t}": -2.5, "token_id:900": -0.5, "token_id:901": -1.0})
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "text": "...",
                "finish_reason": finish,
                "logprobs": {
                    "tokens": [f"token_id:{t}" for t in tokens],
                    "token_logprobs": [-2.5] * len(tokens),
                    "top_logprobs": tops,
                    "text_offset": list(range(len(tokens))),
                },
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": len(tokens), "prompt_tokens_details": {"cached_tokens": 2}},
    }


def test_vllm_completion_request_and_parse() -> None:
    with CannedServer(lambda s, c: Reply(200, vllm_body([11, 12]))) as server:
        with ServerClient(server.url + "/v1", engine="vllm", model="m", retry=FAST) as client:
            result = client.complete(CompletionRequest(prompt=[1, 2, 3], max_tokens=2, top_logprobs=2, seed=4))
    sent = server.requests[0]
    assert sent.path == "/v1/completions"
    assert sent.body["prompt"] == [1, 2, 3] and sent.body["logprobs"] == 2 and sent.body["max_tokens"] == 2
    assert sent.body["return_tokens_as_token_ids"] is True and sent.body["seed"] == 4
    assert result.token_ids == (11, 12)
    assert result.positions[0].top_ids == (900, 901)  # the extra sampled entry is not part of the top 2
    assert result.positions[0].logprob == -2.5
    assert result.finish_reason == "length" and result.cached_prompt_tokens == 2


def test_vllm_tokens_as_text_ask_for_token_ids() -> None:
    body = vllm_body([11])
    body["choices"][0]["logprobs"]["tokens"] = ["hello"]
    with CannedServer(lambda s, c: Reply(200, body)) as server:
        with ServerClient(server.url, engine="vllm", model="m", retry=FAST) as client:
            with pytest.raises(IncompleteResponseError, match="return-tokens-as-token-ids"):
                client.complete(CompletionRequest(prompt=[1], max_tokens=1, top_logprobs=2))


def test_vllm_stream() -> None:
    chunks = []
    for i, t in enumerate([11, 12, 13]):
        body = vllm_body([t], finish="stop" if i == 2 else None)  # type: ignore[arg-type]
        body.pop("usage")
        chunks.append(body)
    chunks.append({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 3}})
    chunks.append("[DONE]")
    with CannedServer(lambda s, c: Reply(200, sse=chunks)) as server:
        with ServerClient(server.url, engine="vllm", model="m", retry=FAST) as client:
            with client.stream(CompletionRequest(prompt=[1], max_tokens=3, top_logprobs=2)) as stream:
                ids = [p.token_id for p in stream]
            result = stream.result()
    assert ids == [11, 12, 13] and result.finish_reason == "stop" and result.prompt_tokens == 3
    assert server.requests[0].body["stream"] is True


# -- SGLang -------------------------------------------------------------------------


def sglang_meta(tokens: list[int], finish: dict | None) -> dict:
    return {
        "prompt_tokens": 3,
        "completion_tokens": len(tokens),
        "cached_tokens": 1,
        "finish_reason": finish,
        "output_token_logprobs": [[-0.2, t, None] for t in tokens],
        "output_top_logprobs": [[[-0.2, t, None], [-1.9, 500, None]] for t in tokens],
    }


def test_sglang_generate_request_and_parse() -> None:
    body = {"text": "..", "meta_info": sglang_meta([21, 22], {"type": "stop", "matched": 2})}
    with CannedServer(lambda s, c: Reply(200, body)) as server:
        with ServerClient(server.url, engine="sglang", retry=FAST) as client:
            result = client.complete(CompletionRequest(prompt=[1, 2, 3], max_tokens=8, top_logprobs=2))
    sent = server.requests[0]
    assert sent.path == "/generate" and sent.body["input_ids"] == [1, 2, 3]
    assert sent.body["return_logprob"] is True and sent.body["top_logprobs_num"] == 2
    assert sent.body["sampling_params"]["max_new_tokens"] == 8
    assert result.token_ids == (21, 22) and result.finish_reason == "stop"
    assert result.positions[1].top_ids == (22, 500) and result.cached_prompt_tokens == 1


@pytest.mark.parametrize("cumulative", [True, False])
def test_sglang_stream_cumulative_or_incremental(cumulative: bool) -> None:
    tokens = [21, 22, 23]
    chunks = []
    for i in range(1, 4):
        shown = tokens[:i] if cumulative else tokens[i - 1 : i]
        meta = sglang_meta(shown, {"type": "length", "length": 3} if i == 3 else None)
        meta["completion_tokens"] = i
        chunks.append({"text": "", "meta_info": meta})
    chunks.append("[DONE]")
    with CannedServer(lambda s, c: Reply(200, sse=chunks)) as server:
        with ServerClient(server.url, engine="sglang", retry=FAST) as client:
            with client.stream(CompletionRequest(prompt=[1], max_tokens=3, top_logprobs=2)) as stream:
                ids = [p.token_id for p in stream]
    assert ids == tokens and stream.result().finish_reason == "length"


# -- async ----------------------------------------------------------------------------


async def test_async_retries_and_concurrency() -> None:
    def respond(seen: Seen, count: int) -> Reply:
        if count == 1:
            return Reply(502, "bad gateway")
        return Reply(200, llama_completion([seen.body["prompt"][0]]))

    with CannedServer(respond) as server:
        async with AsyncServerClient(server.url, retry=FAST) as client:
            results = await asyncio.gather(
                *(client.complete(CompletionRequest(prompt=[i + 1], max_tokens=1, top_logprobs=2)) for i in range(8))
            )
    assert [r.token_ids for r in results] == [(i + 1,) for i in range(8)]
    assert len(server.requests) == 9  # one 502, retried once


async def test_async_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncServerClient(url, retry=FAST) as client:
        with pytest.raises(ServerUnreachableError, match=url.replace(".", r"\.")):
            await client.complete(REQ)


def test_request_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        CompletionRequest(prompt=[1], max_tokens=0)
    with pytest.raises(ValueError, match="prompt is empty"):
        CompletionRequest(prompt=[], max_tokens=1)
    with pytest.raises(ValueError, match="top_logprobs"):
        CompletionRequest(prompt=[1], max_tokens=1, top_logprobs=0)
    with pytest.raises(ValueError, match="engine='tgi'"):
        ServerClient("http://127.0.0.1:1", engine="tgi")
    with pytest.raises(ValueError, match="scheme"):
        ServerClient("127.0.0.1:8080")
