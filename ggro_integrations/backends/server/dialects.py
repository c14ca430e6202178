"""Per-engine request bodies and response parsing: llama.cpp ``llama-server``, vLLM, SGLang.

Each dialect turns a :class:`CompletionRequest` into the engine's JSON and the
engine's JSON (whole, or one streamed chunk at a time) back into
:class:`Position` objects, so the client above them is engine-agnostic.

What each engine's log-probabilities are (checked in their source / docs):

* llama-server ``n_probs`` with ``post_sampling_probs: false`` (the default) is the
  softmax of the raw logits over the whole vocabulary, before any sampler or
  temperature; no cap on N other than the vocabulary size.
* vLLM ``logprobs`` are raw log-probabilities by default (``logprobs_mode`` =
  ``raw_logprobs``), capped by the server's ``--max-logprobs`` (default 20); the
  sampled token is added as an extra entry when it is not in the top N.
* SGLang ``top_logprobs_num`` comes with ``return_logprob``; for temperature > 0 its
  log-probabilities may be taken after temperature scaling unless the server runs
  with ``SGLANG_RETURN_ORIGINAL_LOGPROB=1`` (greedy is unaffected).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable

from .errors import IncompleteResponseError, LogprobsLimitError, ServerRequestError, StreamGapError
from .types import CompletionRequest, CompletionResult, FinishReason, Position, TokenLogprob

ENGINES = ("llama.cpp", "vllm", "sglang")
ENGINE_ALIASES = {
    "llama.cpp": "llama.cpp",
    "llamacpp": "llama.cpp",
    "llama-cpp": "llama.cpp",
    "llama-server": "llama.cpp",
    "llama_cpp": "llama.cpp",
    "vllm": "vllm",
    "sglang": "sglang",
}


@dataclass
class StreamState:
    """What a stream has delivered so far (positions yielded, whether it finished)."""

    positions: int = 0
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    cached_prompt_tokens: int | None = None
    timings: dict[str, float] | None = None


class Dialect:
    """The engine-specific half of the client."""

    engine: str = ""
    completion_path: str = ""
    logprobs_flag: str | None = None
    """The server option that caps top log-probabilities, named in :class:`LogprobsLimitError`."""

    def __init__(self, model: str | None = None) -> None:
        self.model = model

    # -- requests -----------------------------------------------------------------
    def payload(self, request: CompletionRequest, *, stream: bool) -> dict[str, Any]:
        raise NotImplementedError

    # -- responses ----------------------------------------------------------------
    def parse(self, body: dict[str, Any], request: CompletionRequest) -> CompletionResult:
        raise NotImplementedError

    def parse_chunk(self, body: dict[str, Any], request: CompletionRequest, state: StreamState) -> list[Position]:
        """New positions in one streamed chunk; sets ``state.finish_reason`` on the last one."""
        raise NotImplementedError

    def error_message(self, body_text: str) -> str:
        """The server's own reason from an error body (JSON ``error.message`` / ``message``, else the text)."""
        try:
            body = json.loads(body_text)
        except ValueError:
            return body_text.strip()[:500] or "(empty body)"
        if isinstance(body, dict):
            err = body.get("error")
            if isinstance(err, dict) and err.get("message"):
                return str(err["message"])
            if isinstance(err, str) and err:
                return err
            if body.get("message"):
                return str(body["message"])
            if body.get("detail"):
                return str(body["detail"])
        return body_text.strip()[:500]

    def request_error(self, status: int, message: str, request: CompletionRequest | None, url: str) -> ServerRequestError:
        """The error for a 4xx answer; dialects recognise their log-probability cap here."""
        return ServerRequestError(
            f"the {self.engine} server at {url} rejected the request (HTTP {status}): {message}",
            url=url,
            engine=self.engine,
            status=status,
        )

    # -- helpers --------------------------------------------------------------------
    def _incomplete(self, what: str) -> IncompleteResponseError:
        return IncompleteResponseError(f"the {self.engine} server's response {what}", url="", engine=self.engine)

    def _position(self, token_id: int, logprob: float, top: Iterable[tuple[int, float]], n: int) -> Position:
        ranked = sorted(top, key=lambda c: -c[1])[:n]
        return Position(
            token_id=int(token_id),
            logprob=float(logprob),
            top=tuple(TokenLogprob(int(t), float(lp)) for t, lp in ranked),
        )


class LlamaCppDialect(Dialect):
    """llama.cpp ``llama-server`` native ``/completion``."""

    engine = "llama.cpp"
    completion_path = "/completion"
    logprobs_flag = None  # n_probs is only capped by the vocabulary size

    def payload(self, request: CompletionRequest, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": list(request.prompt),
            "n_predict": request.max_tokens,
            "n_probs": request.top_logprobs,
            # pre-sampling probabilities: the softmax of the raw logits (the default, said explicitly)
            "post_sampling_probs": False,
            "temperature": request.temperature,
            "top_p": request.top_p,
            # Only temperature then top-p, in that order (as the in-process base rule does);
            # llama-server's defaults otherwise add top-k 40 and min-p 0.05.
            "samplers": ["temperature", "top_p"],
            "top_k": 0,
            "min_p": 0.0,
            "repeat_penalty": 1.0,
            "cache_prompt": request.cache_prompt,
            "ignore_eos": request.ignore_eos,
            # every generated id, including those llama-server reports no probabilities for (below)
            "return_tokens": True,
            "stream": stream,
        }
        if stream:
            # prompt_n / cache_n in every chunk, so a stream closed early still says what it cost
            body["timings_per_token"] = True
        if request.seed is not None:
            body["seed"] = request.seed
        return body

    def _align(self, tokens: list[int], reported: list[Position]) -> list[Position]:
        """Every generated token, with the distributions llama-server reported placed where they belong.

        llama-server adds a position's probabilities only when the text generated so
        far ends on a whole UTF-8 character: a token that ends mid-character (one
        byte of an emoji, say) gets none, and the token completing the character
        gets its own. The reported entries are therefore the last token of each run,
        so matching from the end puts every one at its position; the others come
        back without a distribution (``Position.has_distribution`` is False).
        """
        out: list[Position] = []
        j = len(reported) - 1
        for token in reversed(tokens):
            if j >= 0 and reported[j].token_id == token:
                out.append(reported[j])
                j -= 1
            else:
                out.append(Position(token_id=int(token), logprob=math.nan, top=()))
        if j >= 0:
            raise self._incomplete(
                f"has probabilities for tokens that are not among the generated ones ({len(reported)} entries, "
                f"{len(tokens)} tokens)"
            )
        return out[::-1]

    def _positions(self, probs: list[dict[str, Any]], n: int) -> list[Position]:
        out = []
        for entry in probs:
            try:
                top = [(c["id"], c["logprob"]) for c in entry["top_logprobs"]]
                out.append(self._position(entry["id"], entry["logprob"], top, n))
            except (KeyError, TypeError) as exc:
                raise self._incomplete(
                    f"has a completion_probabilities entry without id/logprob/top_logprobs ({exc!r}); "
                    "llama-server older than b4000 reports 'probs' instead: upgrade it."
                ) from None
        return out

    def _finish(self, body: dict[str, Any]) -> FinishReason:
        stop_type = body.get("stop_type")
        if stop_type in ("eos", "word"):
            return "stop"
        if stop_type == "limit":
            return "length"
        raise self._incomplete(f"ended without a stop reason (stop_type={stop_type!r})")

    def _accounting(self, body: dict[str, Any]) -> tuple[int | None, int | None, dict[str, float]]:
        timings = body.get("timings") or {}
        cached = timings.get("cache_n")
        evaluated = timings.get("prompt_n")
        prompt = body.get("tokens_evaluated")
        numbers = {k: float(v) for k, v in timings.items() if isinstance(v, (int, float))}
        # prompt_n counts what was recomputed; cache_n what came from the prefix cache
        total = (int(cached) + int(evaluated)) if cached is not None and evaluated is not None else prompt
        return total, (int(cached) if cached is not None else None), numbers

    def parse(self, body: dict[str, Any], request: CompletionRequest) -> CompletionResult:
        if body.get("stop") is not True:
            raise self._incomplete("is not a finished completion ('stop' is not true)")
        probs = body.get("completion_probabilities")
        predicted = body.get("tokens_predicted")
        content = body.get("content")
        incomplete_text = isinstance(content, str) and content.strip("\ufffd") == ""  # only partial characters
        if probs is None and incomplete_text and isinstance(body.get("tokens"), list) and body["tokens"]:
            # every token generated ends inside one UTF-8 character: llama-server reports no
            # probabilities for any of them, and then leaves the field out
            probs = []
        if probs is None:
            raise self._incomplete("has no completion_probabilities (was n_probs dropped by a proxy?)")
        positions = self._positions(probs, request.top_logprobs)
        tokens = body.get("tokens")
        if isinstance(tokens, list) and (tokens or not positions):
            positions = self._align([int(t) for t in tokens], positions)
        if isinstance(predicted, int) and predicted != len(positions) and body.get("stop_type") != "word":
            raise self._incomplete(f"has {len(positions)} positions for {predicted} predicted tokens")
        prompt, cached, timings = self._accounting(body)
        return CompletionResult(
            positions=tuple(positions),
            finish_reason=self._finish(body),
            prompt_tokens=prompt,
            cached_prompt_tokens=cached,
            engine_timings=timings,
        )

    def parse_chunk(self, body: dict[str, Any], request: CompletionRequest, state: StreamState) -> list[Position]:
        positions = self._positions(body.get("completion_probabilities") or [], request.top_logprobs)
        predicted = body.get("tokens_predicted")
        if isinstance(predicted, int) and predicted > state.positions + len(positions):
            # A token that ended mid-UTF-8-character was generated but never streamed
            # (neither its id nor its probabilities): the stream cannot say what it was.
            raise StreamGapError(
                f"the llama.cpp stream skipped {predicted - state.positions - len(positions)} token(s) after "
                f"{state.positions} that end mid-UTF-8 character (llama-server streams neither their ids nor "
                "their probabilities); continue with complete(), which returns every token",
                url="",
                engine=self.engine,
            )
        if body.get("stop") is True:
            state.finish_reason = self._finish(body)
        if body.get("stop") is True or body.get("timings"):
            state.prompt_tokens, state.cached_prompt_tokens, state.timings = self._accounting(body)
        return positions


def _vllm_token_id(token: Any) -> int:
    if isinstance(token, int):
        return token
    if isinstance(token, str) and token.startswith("token_id:"):
        return int(token[len("token_id:"):])
    raise IncompleteResponseError(
        f"vLLM returned token {token!r} as text, not as an id: ask with return_tokens_as_token_ids "
        "(vLLM >= 0.6.4) or start the server with --return-tokens-as-token-ids.",
        url="",
        engine="vllm",
    )


class VLLMDialect(Dialect):
    """vLLM's OpenAI-compatible ``/v1/completions`` with token-id prompts."""

    engine = "vllm"
    completion_path = "/v1/completions"
    logprobs_flag = "--max-logprobs"

    def payload(self, request: CompletionRequest, *, stream: bool) -> dict[str, Any]:
        if not self.model:
            raise ValueError("vLLM needs the served model's name: pass model=... or call check() first.")
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": list(request.prompt),
            "max_tokens": request.max_tokens,
            "logprobs": request.top_logprobs,
            "return_tokens_as_token_ids": True,
            "temperature": request.temperature,
            "top_p": request.top_p,
            # vLLM fills unset sampling fields from the model's generation_config.json
            # (--generation-config auto); say the neutral values so they cannot apply.
            "top_k": 0,
            "min_p": 0.0,
            "repetition_penalty": 1.0,
            "ignore_eos": request.ignore_eos,
            "skip_special_tokens": False,
            "stream": stream,
        }
        if request.stop_token_ids:
            body["stop_token_ids"] = list(request.stop_token_ids)
        if request.seed is not None:
            body["seed"] = request.seed
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def request_error(self, status: int, message: str, request: CompletionRequest | None, url: str) -> ServerRequestError:
        if "logprobs" in message and "max allowed" in message:
            n = request.top_logprobs if request else "N"
            return LogprobsLimitError(
                f"the vLLM server at {url} caps log-probabilities below the {n} asked for ({message}): "
                f"restart it with --max-logprobs {n} (or more), or ask for fewer (top_logprobs).",
                url=url,
                engine=self.engine,
                status=status,
            )
        return super().request_error(status, message, request, url)

    def _positions(self, logprobs: dict[str, Any] | None, n: int) -> list[Position]:
        if not logprobs:
            return []
        tokens = logprobs.get("tokens") or []
        chosen = logprobs.get("token_logprobs") or []
        tops = logprobs.get("top_logprobs") or []
        if not (len(tokens) == len(chosen) == len(tops)):
            raise self._incomplete(
                f"has {len(tokens)} tokens, {len(chosen)} token_logprobs and {len(tops)} top_logprobs"
            )
        out = []
        for token, lp, top in zip(tokens, chosen, tops):
            if top is None or lp is None:
                raise self._incomplete("has a generated token without log-probabilities")
            out.append(self._position(_vllm_token_id(token), lp, [(_vllm_token_id(k), v) for k, v in top.items()], n))
        return out

    @staticmethod
    def _finish(reason: Any) -> FinishReason:
        if reason == "length":
            return "length"
        if reason == "stop":
            return "stop"
        raise IncompleteResponseError(
            f"the vLLM server ended the completion with finish_reason={reason!r} (aborted?)", url="", engine="vllm"
        )

    @staticmethod
    def _usage(body: dict[str, Any]) -> tuple[int | None, int | None]:
        usage = body.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        return usage.get("prompt_tokens"), details.get("cached_tokens")

    def parse(self, body: dict[str, Any], request: CompletionRequest) -> CompletionResult:
        choices = body.get("choices") or []
        if not choices:
            raise self._incomplete("has no choices")
        choice = choices[0]
        positions = self._positions(choice.get("logprobs"), request.top_logprobs)
        prompt, cached = self._usage(body)
        return CompletionResult(
            positions=tuple(positions),
            finish_reason=self._finish(choice.get("finish_reason")),
            prompt_tokens=prompt,
            cached_prompt_tokens=cached,
        )

    def parse_chunk(self, body: dict[str, Any], request: CompletionRequest, state: StreamState) -> list[Position]:
        positions: list[Position] = []
        for choice in body.get("choices") or []:
            positions.extend(self._positions(choice.get("logprobs"), request.top_logprobs))
            if choice.get("finish_reason") is not None:
                state.finish_reason = self._finish(choice["finish_reason"])
        if body.get("usage"):
            state.prompt_tokens, state.cached_prompt_tokens = self._usage(body)
        return positions


class SGLangDialect(Dialect):
    """SGLang's native ``/generate`` with ``input_ids``."""

    engine = "sglang"
    completion_path = "/generate"
    logprobs_flag = None

    def payload(self, request: CompletionRequest, *, stream: bool) -> dict[str, Any]:
        params: dict[str, Any] = {
            "max_new_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "top_k": -1,
            "min_p": 0.0,
            "repetition_penalty": 1.0,
            "ignore_eos": request.ignore_eos,
            "skip_special_tokens": False,
        }
        if request.stop_token_ids:
            params["stop_token_ids"] = list(request.stop_token_ids)
        if request.seed is not None:
            params["sampling_seed"] = request.seed
        return {
            "input_ids": list(request.prompt),
            "sampling_params": params,
            "return_logprob": True,
            "top_logprobs_num": request.top_logprobs,
            "return_text_in_logprobs": False,
            "stream": stream,
        }

    def _positions(self, meta: dict[str, Any], n: int, start: int = 0) -> list[Position]:
        chosen = meta.get("output_token_logprobs")
        tops = meta.get("output_top_logprobs")
        if chosen is None or tops is None:
            raise self._incomplete("has no output_token_logprobs / output_top_logprobs (return_logprob ignored?)")
        if len(chosen) != len(tops):
            raise self._incomplete(f"has {len(chosen)} token logprobs but {len(tops)} top lists")
        out = []
        for (lp, token_id, *_), top in list(zip(chosen, tops))[start:]:
            out.append(self._position(token_id, lp, [(c[1], c[0]) for c in top or []], n))
        return out

    @staticmethod
    def _finish(meta: dict[str, Any]) -> FinishReason | None:
        reason = meta.get("finish_reason")
        if reason is None:
            return None
        kind = reason.get("type") if isinstance(reason, dict) else reason
        if kind == "length":
            return "length"
        if kind == "stop":
            return "stop"
        raise IncompleteResponseError(
            f"the SGLang server ended the generation with finish_reason={reason!r} (aborted?)", url="", engine="sglang"
        )

    def parse(self, body: dict[str, Any], request: CompletionRequest) -> CompletionResult:
        meta = body.get("meta_info") if isinstance(body, dict) else None
        if not isinstance(meta, dict):
            raise self._incomplete("has no meta_info")
        finish = self._finish(meta)
        if finish is None:
            raise self._incomplete("ended without a finish_reason")
        return CompletionResult(
            positions=tuple(self._positions(meta, request.top_logprobs)),
            finish_reason=finish,
            prompt_tokens=meta.get("prompt_tokens"),
            cached_prompt_tokens=meta.get("cached_tokens"),
        )

    def parse_chunk(self, body: dict[str, Any], request: CompletionRequest, state: StreamState) -> list[Position]:
        meta = body.get("meta_info") or {}
        chosen = meta.get("output_token_logprobs") or []
        # Chunks carry either every position so far or only the new ones (server option
        # --stream-output); completion_tokens is cumulative either way, so it says where
        # this chunk's first position sits.
        total = int(meta.get("completion_tokens", state.positions + len(chosen)))
        first_index = total - len(chosen)
        skip = max(0, state.positions - first_index)
        positions = self._positions(meta, request.top_logprobs, start=skip) if chosen else []
        finish = self._finish(meta)
        if finish is not None:
            state.finish_reason = finish
            state.prompt_tokens = meta.get("prompt_tokens")
            state.cached_prompt_tokens = meta.get("cached_tokens")
        return positions


def make_dialect(engine: str, model: str | None = None) -> Dialect:
    key = ENGINE_ALIASES.get(engine.lower())
    if key is None:
        raise ValueError(f"engine={engine!r}; use one of {', '.join(ENGINES)}.")
    cls = {"llama.cpp": LlamaCppDialect, "vllm": VLLMDialect, "sglang": SGLangDialect}[key]
    return cls(model)
