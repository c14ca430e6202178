"""``GGRODecoder``: entropy-triggered, reward-gradient-guided decoding over any HF causal LM.

One generation is a *free run* of base decoding up to the first trigger, then a
chain of segments: at each trigger the unmodified segment is decoded, nudged
candidates from the policy's top-K are decoded from the same cached prefix and
scored, the best segment is committed, and decoding continues from its end
(which is the next trigger, or the end of the response).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Generator, Sequence

import torch

from ..config import GGROConfig
from ..conversation import Prompt, as_conversation
from ..errors import ConfigError, PromptError
from ..events import CandidateTrial, InterventionEvent, TextDelta
from ..kv_cache import cache_length, crop_cache, select_row
from ..rewards.base import RewardModel, RewardSession, RewardUsage
from .nudging import rank_nudges, top_k_candidates
from .policy import PolicyRunner, context_window, encode_prompt, eos_token_ids, uses_chat_template
from .result import GenerationStream, GGROResult, GGROStats, StreamItem
from .rules import BaseRule, token_entropy
from .segments import Segment, SegmentDecoder
from .stopping import StopSequences

STRATEGIES = ("ggro", "greedy", "best_of_n")


def _resolve_reward_model(spec: Any) -> RewardModel | None:
    if spec is None or isinstance(spec, RewardModel):
        return spec
    from ..rewards.registry import load_reward_model

    return load_reward_model(spec)


@dataclass
class _Scored:
    """A candidate segment with its reward."""

    segment: Segment
    trial: CandidateTrial

    @property
    def reward(self) -> float:
        assert self.trial.reward is not None
        return self.trial.reward


def _first(segment: Segment) -> int:
    """The token a segment starts with at its trigger (kept even when a stop sequence trimmed it)."""
    assert segment.first_token is not None
    return segment.first_token


class GGRODecoder:
    """Gradient-Guided Reward Optimization over a Hugging Face causal LM.

    Example:
        >>> decoder = GGRODecoder(model, tokenizer, HFRewardModel(rm, rm_tok))   # doctest: +SKIP
        >>> result = decoder.generate("How do I sharpen a kitchen knife?")       # doctest: +SKIP
        >>> result.text, result.reward, len(result.interventions)                # doctest: +SKIP

    ``reward_model`` takes a ``RewardModel`` or any spec ``load_reward_model``
    accepts (a registered name, a path, a ``{name: weight}`` mapping).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        reward_model: Any = None,
        config: GGROConfig | None = None,
        **overrides: Any,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = (config or GGROConfig()).replace(**overrides)
        self.reward_model = _resolve_reward_model(reward_model)
        if self.reward_model is not None:
            self.reward_model.check_policy_tokenizer(tokenizer)
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.context_window = context_window(model)

    # -- public API -----------------------------------------------------------

    def generate(
        self,
        prompt: Prompt,
        *,
        strategy: str = "ggro",
        n: int | None = None,
        reward_model: Any = None,
        tools: Sequence[dict[str, Any]] | None = None,
        **overrides: Any,
    ) -> GGROResult:
        """Generate a response to ``prompt`` (a string or chat messages).

        ``strategy`` is ``"ggro"`` (default), ``"greedy"`` (no intervention) or
        ``"best_of_n"`` (``n`` samples, keep the highest reward). Keyword
        overrides of any ``GGROConfig`` field apply to this call only.
        """
        steps = self._steps(prompt, strategy=strategy, n=n, reward_model=reward_model, tools=tools, **overrides)
        stream = GenerationStream(steps)
        for _ in stream:
            pass
        assert stream.result is not None
        return stream.result

    def stream(
        self,
        prompt: Prompt,
        *,
        strategy: str = "ggro",
        reward_model: Any = None,
        tools: Sequence[dict[str, Any]] | None = None,
        **overrides: Any,
    ) -> GenerationStream:
        """Stream GGRO's committed text (``TextDelta``) and its ``InterventionEvent`` s, in order.

        Text is released only once GGRO can no longer replace it; each event
        precedes the text it decided. ``stream.result`` holds the full result afterwards.
        ``strategy="greedy"`` streams plain decoding token by token.
        """
        if strategy == "best_of_n":
            raise ConfigError("strategy='best_of_n' cannot stream: its answer is known only once all samples end.")
        return GenerationStream(
            self._steps(prompt, strategy=strategy, n=None, reward_model=reward_model, tools=tools, **overrides)
        )

    # -- one generation -----------------------------------------------------------

    def _steps(
        self,
        prompt: Prompt,
        *,
        strategy: str,
        n: int | None,
        reward_model: Any,
        tools: Sequence[dict[str, Any]] | None,
        **overrides: Any,
    ) -> Generator[StreamItem, None, GGROResult]:
        if strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {list(STRATEGIES)}; got {strategy!r}.")
        cfg = self.config.replace(**overrides)
        if n is not None:
            cfg = cfg.replace(best_of_n=n)
        reward = _resolve_reward_model(reward_model) if reward_model is not None else self.reward_model
        if reward is not None and reward is not self.reward_model:
            reward.check_policy_tokenizer(self.tokenizer)
        # With no refinements GGRO only monitors entropy, which needs no reward model.
        if reward is None and (strategy == "best_of_n" or (strategy == "ggro" and cfg.num_refinements > 0)):
            raise ConfigError(
                f"strategy={strategy!r} needs a reward model; pass reward_model= to GGRODecoder or to this call."
            )
        if strategy == "ggro" and cfg.num_refinements > 0 and cfg.nudge_scoring == "gradient":
            if not reward.supports_gradient:
                raise ConfigError(
                    f"reward model {reward.name!r} cannot compute gradients; set nudge_scoring='exact'."
                )
        conversation = as_conversation(prompt)
        chat = uses_chat_template(self.tokenizer, prompt, cfg.use_chat_template)
        prompt_ids = encode_prompt(self.tokenizer, conversation, chat=chat, tools=tools)
        self._check_length(len(prompt_ids), cfg)
        run = _Generation(self, cfg, strategy, conversation, prompt_ids, reward)
        if strategy == "best_of_n":
            return run.best_of_n()
        return (yield from run.decode())

    def _check_length(self, prompt_tokens: int, cfg: GGROConfig) -> None:
        window = self.context_window
        if window is None:
            return
        if prompt_tokens >= window:
            raise PromptError(
                f"the prompt is {prompt_tokens} tokens, which does not fit the policy's context window of "
                f"{window} tokens; shorten the prompt."
            )
        if prompt_tokens + cfg.max_new_tokens > window:
            raise PromptError(
                f"the prompt ({prompt_tokens} tokens) plus max_new_tokens={cfg.max_new_tokens} exceeds the "
                f"policy's context window of {window} tokens; lower max_new_tokens to at most "
                f"{window - prompt_tokens} or shorten the prompt."
            )


class _Generation:
    """State of one call: caches, counters, committed tokens, events."""

    def __init__(
        self,
        decoder: GGRODecoder,
        cfg: GGROConfig,
        strategy: str,
        conversation: list[dict[str, Any]],
        prompt_ids: list[int],
        reward: RewardModel | None,
    ) -> None:
        self.decoder = decoder
        self.cfg = cfg
        self.strategy = strategy
        self.tokenizer = decoder.tokenizer
        self.prompt_ids = prompt_ids
        self.reward = reward
        self.session: RewardSession | None = reward.session(conversation, decoder.tokenizer) if reward else None
        self.runner = PolicyRunner(decoder.model)
        self.started = time.perf_counter()
        seed = cfg.seed if cfg.seed is not None else int(torch.seed() % (2**63))
        device = self.runner.device
        self.generator = torch.Generator(device=device if device.type != "mps" else "cpu").manual_seed(seed)
        self.nudge_generator = torch.Generator().manual_seed(seed + 1)
        temperature = cfg.temperature
        if strategy == "greedy":
            temperature = 0.0
        elif strategy == "best_of_n" and temperature == 0:
            temperature = cfg.best_of_n_temperature
        threshold = cfg.entropy_threshold if strategy == "ggro" else math.inf
        self.segments = SegmentDecoder(
            runner=self.runner,
            tokenizer=self.tokenizer,
            rule=BaseRule(temperature, cfg.top_p, self.generator),
            threshold=threshold,
            min_tokens=cfg.min_segment_tokens,
            eos_ids=decoder.eos_ids,
            stops=StopSequences(cfg.stop),
            max_new_tokens=cfg.max_new_tokens,
        )
        self.committed: list[int] = []
        self.events: list[InterventionEvent] = []
        self.text_limit: int | None = None
        self.released = 0  # characters of the response already streamed
        self.released_tokens = 0  # committed tokens whose text has been (at least partly) streamed

    # -- text -------------------------------------------------------------------

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _final_text(self) -> str:
        text = self._decode(self.committed)
        return text if self.text_limit is None else text[: self.text_limit]

    def _release(self, final: bool) -> list[TextDelta]:
        """Committed text not yet streamed, holding back what a stop sequence or a split character may still change."""
        text = self._final_text()
        end = len(text)
        if not final:
            end -= self.segments.stops.holdback(text)
            while end > self.released and text[end - 1] == "\ufffd":
                end -= 1  # an incomplete multi-byte character
        if end <= self.released:
            return []
        delta = TextDelta(text[self.released : end], self.committed[self.released_tokens :])
        self.released, self.released_tokens = end, len(self.committed)
        return [delta]

    # -- GGRO and greedy --------------------------------------------------------------

    def decode(self) -> Generator[StreamItem, None, GGROResult]:
        cache = self.runner.new_cache()
        logits = self.runner.forward([self.prompt_ids], cache)
        # Before the first trigger every token is final: release them one by one as they come.
        while True:
            free = self.segments.decode(cache, logits, self.committed, [None], min_tokens=0, max_tokens=1)[0]
            finish = self._commit(free)
            yield from self._release(final=finish is not None)
            logits = free.end_logits
            if not free.paused:
                break
        while finish is None:
            assert logits is not None
            segment, event = self._trigger(cache, logits)
            if event is not None:
                self.events.append(event)
                yield event
            finish = self._commit(segment)
            yield from self._release(final=finish is not None)
            logits = segment.end_logits
        return self._result(finish)

    def _commit(self, segment: Segment) -> str | None:
        if segment.finish == "stop" and segment.text_limit is not None:
            self.text_limit = segment.text_limit
        self.committed.extend(segment.tokens)
        return segment.finish

    def _trigger(self, cache: Any, logits: torch.Tensor) -> tuple[Segment, InterventionEvent | None]:
        """Handle the trigger at the end of ``committed``: returns the accepted segment and its event."""
        cfg = self.cfg
        started = time.perf_counter()
        prefix_len = cache_length(cache)
        entropy = float(token_entropy(logits)[0])
        base = self.segments.decode(cache, logits, self.committed, [None])[0]
        if not base.tokens:
            # The base rule ends the response right here (EOS, or a token that completes a stop
            # sequence): the user's end condition, as final as EOS, so nothing to steer.
            return base, None
        original = base.first_token
        base_trial = self._trial(base, None, is_original=True)
        candidates_tried: list[_Scored] = []
        stop_reason = "disabled"
        best_trial: CandidateTrial = base_trial
        best: Segment = base
        if cfg.num_refinements > 0:
            assert self.session is not None
            scored_base = _Scored(base, base_trial)
            candidates = top_k_candidates(logits, cfg.nudge_top_k, self.decoder.eos_ids)
            gains = self._score_with_gains(scored_base, candidates)
            refine = self._refine_parallel if cfg.refinement == "parallel" else self._refine_sequential
            winner, candidates_tried, stop_reason = refine(cache, logits, prefix_len, scored_base, candidates, gains)
            best, best_trial = winner.segment, winner.trial
        event = InterventionEvent(
            trigger_index=len(self.events),
            position=len(self.committed),
            char_offset=len(self._decode(self.committed)),
            entropy=entropy,
            threshold=cfg.entropy_threshold,
            original_token_id=original,
            original_token=self._decode([original]),
            chosen_token_id=_first(best),
            chosen_token=self._decode([_first(best)]),
            base_reward=base_trial.reward,
            best_reward=best_trial.reward,
            accepted=best is not base,
            refinements_used=len(candidates_tried),
            seconds=time.perf_counter() - started,
            original_segment=base_trial.segment,
            chosen_segment=best_trial.segment,
            candidates=[base_trial] + [c.trial for c in candidates_tried],
            stop_reason=stop_reason,
            reward_model=self.reward.name if self.reward else "",
            base_reward_components=dict(base_trial.reward_components),
            best_reward_components=dict(best_trial.reward_components),
        )
        return best, event

    def _trial(self, segment: Segment, gain: float | None, *, is_original: bool = False) -> CandidateTrial:
        token = _first(segment)
        return CandidateTrial(
            token_id=token,
            token=self._decode([token]),
            predicted_gain=gain,
            reward=None,
            segment=self._decode(segment.tokens),
            is_original=is_original,
            num_tokens=len(segment.tokens),
        )

    def _score(self, items: list[_Scored]) -> None:
        assert self.session is not None
        scores = self.session.score(self.committed, [s.segment.tokens for s in items])
        for i, item in enumerate(items):
            item.trial.reward, item.trial.reward_components = scores.row(i)

    def _gains(self, segment: Segment, candidates: list[int]) -> torch.Tensor:
        assert self.session is not None
        if self.cfg.nudge_scoring == "exact":
            return self.session.exact_gains(self.committed, segment.tokens, candidates)
        return self.session.gradient_gains(self.committed, segment.tokens, candidates)

    def _score_with_gains(self, item: _Scored, candidates: list[int]) -> torch.Tensor:
        """Score ``item`` and compute its candidates' gains, in one reward pass where the session can."""
        assert self.session is not None
        if self.cfg.nudge_scoring == "exact":
            self._score([item])
            return self._gains(item.segment, candidates)
        scores, gains = self.session.score_and_gradient_gains(self.committed, item.segment.tokens, candidates)
        item.trial.reward, item.trial.reward_components = scores.row(0)
        return gains

    def _refine_sequential(
        self,
        cache: Any,
        logits: torch.Tensor,
        prefix_len: int,
        base: _Scored,
        candidates: list[int],
        base_gains: torch.Tensor,
    ) -> tuple[_Scored, list[_Scored], str]:
        cfg = self.cfg
        tried = {_first(base.segment)}
        best, in_cache = base, base
        gains: torch.Tensor | None = base_gains
        trials: list[_Scored] = []
        stop_reason = "budget"
        for _ in range(cfg.num_refinements):
            if gains is None:
                # Gains are relative to the best segment so far; they only change when it does.
                gains = self._gains(best.segment, candidates)
            ranked = rank_nudges(
                candidates,
                gains,
                tried,
                count=1,
                selection=cfg.nudge_selection,
                temperature=cfg.nudge_temperature,
                generator=self.nudge_generator,
            )
            if not ranked:
                stop_reason = "no_positive_gain"
                break
            token, gain = ranked[0]
            tried.add(token)
            crop_cache(cache, prefix_len)
            segment = self.segments.decode(cache, logits, self.committed, [token])[0]
            item = _Scored(segment, self._trial(segment, gain))
            self._score([item])
            trials.append(item)
            in_cache = item
            if item.reward > best.reward:  # ties keep the earlier (the unmodified first)
                best = item
                # Gains are taken at the new best's trigger token. An emptied segment ("stop right
                # here") has no token to differentiate at: the ranking from the last one stands.
                gains = None if item.segment.tokens else gains
        self._restore(cache, prefix_len, best, in_cache)
        return best, trials, stop_reason

    def _refine_parallel(
        self,
        cache: Any,
        logits: torch.Tensor,
        prefix_len: int,
        base: _Scored,
        candidates: list[int],
        gains: torch.Tensor,
    ) -> tuple[_Scored, list[_Scored], str]:
        cfg = self.cfg
        ranked = rank_nudges(
            candidates,
            gains,
            {_first(base.segment)},
            count=cfg.num_refinements,
            selection=cfg.nudge_selection,
            temperature=cfg.nudge_temperature,
            generator=self.nudge_generator,
        )
        if not ranked:
            return base, [], "no_positive_gain"
        crop_cache(cache, prefix_len)
        cache.batch_repeat_interleave(len(ranked))
        rows = logits.expand(len(ranked), -1)
        segments = self.segments.decode(cache, rows, self.committed, [t for t, _ in ranked])
        trials = [_Scored(seg, self._trial(seg, gain)) for seg, (_, gain) in zip(segments, ranked)]
        self._score(trials)
        best = base
        for item in trials:
            if item.reward > best.reward:  # ties keep the earlier (the unmodified first)
                best = item
        # Rows left the batched cache as they finished: keep one row's prefix and re-feed the winner.
        select_row(cache, 0)
        crop_cache(cache, prefix_len)
        self._refeed(cache, best.segment)
        stop_reason = "budget" if len(ranked) == cfg.num_refinements else "no_positive_gain"
        return best, trials, stop_reason

    def _restore(self, cache: Any, prefix_len: int, best: _Scored, in_cache: _Scored) -> None:
        """Make ``cache`` hold the prompt, the committed text and ``best``'s segment."""
        if best is in_cache or best.segment.finish is not None:
            return  # already there, or the response ends with it and the cache is no longer needed
        crop_cache(cache, prefix_len)
        self._refeed(cache, best.segment)

    def _refeed(self, cache: Any, segment: Segment) -> None:
        if segment.finish is None and segment.tokens:
            # One forward over the segment: cost proportional to the segment, not the context.
            self.runner.forward([segment.tokens], cache)

    # -- Best-of-N ------------------------------------------------------------------

    def best_of_n(self) -> GGROResult:
        count = self.cfg.best_of_n
        cache = self.runner.new_cache()
        logits = self.runner.forward([self.prompt_ids], cache)
        if count > 1:
            cache.batch_repeat_interleave(count)
            logits = logits.expand(count, -1)
        samples = self.segments.decode(cache, logits, [], [None] * count, min_tokens=0)
        assert self.session is not None
        scores = self.session.score([], [s.tokens for s in samples])
        best = int(torch.argmax(scores.values))
        self._commit(samples[best])
        result = self._result(samples[best].finish or "length", reward=scores.row(best))
        result.samples = [
            {"text": self._sample_text(s), "reward": float(scores.values[i]), "finish_reason": s.finish}
            for i, s in enumerate(samples)
        ]
        return result

    def _sample_text(self, segment: Segment) -> str:
        text = self._decode(segment.tokens)
        return text if segment.text_limit is None else text[: segment.text_limit]

    # -- result -------------------------------------------------------------------------

    def _result(self, finish: str, reward: tuple[float, dict[str, float]] | None = None) -> GGROResult:
        if reward is None and self.session is not None:
            reward = self._final_reward()
        usage = self.session.usage if self.session else RewardUsage()
        stats = GGROStats(
            prompt_tokens=len(self.prompt_ids),
            new_tokens=len(self.committed),
            policy_forward_passes=self.runner.forward_passes,
            policy_tokens_processed=self.runner.tokens_processed,
            reward_calls=usage.forward_calls,
            reward_sequences_scored=usage.sequences_scored,
            reward_tokens_processed=usage.tokens_processed,
            reward_prompt_tokens_processed=usage.prompt_tokens_processed,
            reward_backward_passes=usage.backward_passes,
            triggers=len(self.events),
            interventions_accepted=sum(e.accepted for e in self.events),
            seconds=time.perf_counter() - self.started,
        )
        return GGROResult(
            text=self._final_text(),
            token_ids=list(self.committed),
            reward=reward[0] if reward else None,
            interventions=list(self.events),
            stats=stats,
            finish_reason=finish,
            strategy=self.strategy,
            reward_components=reward[1] if reward else {},
            config=self.cfg.to_dict(),
            reward_model=self.reward.name if self.reward else "",
        )

    def _final_reward(self) -> tuple[float, dict[str, float]]:
        assert self.session is not None
        # The last trigger's accepted segment is the last thing committed (a segment ends only at
        # another trigger or at the end), so its measured reward is the full response's reward.
        last = self.events[-1] if self.events else None
        if last is not None and last.best_reward is not None:
            return last.best_reward, dict(last.best_reward_components)
        # Everything but the last token as the (cached) prefix: no second read of the response.
        return self.session.score(self.committed[:-1], [self.committed[-1:]]).row(0)
