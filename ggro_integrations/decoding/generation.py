"""One generation's state, shared by the strategies: policy and reward sessions, the response, events."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..backends.base import PolicyBackend, Sampling
from ..events import CandidateTrial, InterventionEvent
from ..rewards.base import RewardSession, RewardUsage
from .call import PreparedCall
from .release import TextRelease
from .result import GGROResult, GGROStats
from .segments import Segment, SegmentRules
from .stopping import StopSequences


@dataclass
class Scored:
    """A candidate segment with its trial record (the reward is filled in when scored)."""

    segment: Segment
    trial: CandidateTrial

    @property
    def reward(self) -> float:
        assert self.trial.reward is not None
        return self.trial.reward


def first_token(segment: Segment) -> int:
    """The token a segment starts with at its trigger (kept even when a stop sequence trimmed it)."""
    assert segment.first_token is not None
    return segment.first_token


class Generation:
    """Everything one call works on; the strategies (``ggro.py``, ``best_of_n.py``) drive it."""

    def __init__(self, call: PreparedCall, backend: PolicyBackend, cancelled: threading.Event | None = None) -> None:
        cfg = call.config
        self.call = call
        self.cfg = cfg
        self.tokenizer = backend.tokenizer
        self.eos_ids = backend.eos_ids
        self.started = time.perf_counter()
        seed = cfg.seed if cfg.seed is not None else int(torch.seed() % (2**62))
        temperature = cfg.temperature
        if call.strategy == "greedy":
            temperature = 0.0
        elif call.strategy == "best_of_n" and temperature == 0:
            temperature = cfg.best_of_n_temperature
        self.rules = SegmentRules(
            tokenizer=self.tokenizer,
            threshold=cfg.entropy_threshold if call.strategy == "ggro" else math.inf,
            min_tokens=cfg.min_segment_tokens,
            eos_ids=self.eos_ids,
            stops=StopSequences(cfg.stop),
            max_new_tokens=cfg.max_new_tokens,
            cancelled=cancelled or threading.Event(),
        )
        self.policy = backend.open(call.prompt_ids, self.rules, Sampling(temperature, cfg.top_p, seed))
        self.nudge_generator = torch.Generator().manual_seed(seed + 1)
        reward = call.reward
        self.reward: RewardSession | None = reward.open_session(call.conversation, self.tokenizer, allow_special_tokens_in_content=cfg.allow_special_tokens_in_content) if reward else None  # noqa: E501
        self.response = TextRelease(self.tokenizer, self.rules.stops)
        self.events: list[InterventionEvent] = []
        self.hooks = None  # the grammar / logits-processor state at prompt ⊕ committed
        if call.grammar is not None or call.logits_processors:
            from ..constraints import LogitsHooks
            from ..constraints.closing import BudgetCloser, preference_order

            closer = None
            if call.grammar is not None:  # close the output before the budget runs out (closing.py)
                order = preference_order(self.tokenizer, call.grammar.vocab_size)
                closer = BudgetCloser(order, cfg.max_new_tokens)
            self.hooks = LogitsHooks(call.grammar, call.logits_processors, prompt_ids=call.prompt_ids, closer=closer)

    @property
    def committed(self) -> list[int]:
        """The response so far, in policy token ids."""
        return self.response.tokens

    def text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def commit(self, segment: Segment) -> str | None:
        """Append ``segment`` to the response; its finish reason (None: decoding goes on)."""
        self.response.commit(segment.tokens, segment.text_limit if segment.finish == "stop" else None)
        if self.hooks is not None and segment.finish is None:
            for token in segment.tokens:
                self.hooks.advance(token)
        return segment.finish

    def decode(self, start: Any, first_tokens: list[int | None], **limits: Any) -> list[Segment]:
        """Segments continuing the response from ``start`` (under the call's grammar, if any)."""
        return self.policy.decode(self.committed, start, first_tokens, hooks=self.hooks, **limits)

    # -- scoring ------------------------------------------------------------------------------

    def trial(self, segment: Segment, gain: float | None, *, is_original: bool = False) -> Scored:
        token = first_token(segment)
        record = CandidateTrial(
            token_id=token,
            token=self.text([token]),
            predicted_gain=gain,
            reward=None,
            segment=self.text(segment.tokens),
            is_original=is_original,
            num_tokens=len(segment.tokens),
        )
        return Scored(segment, record)

    def score(self, items: list[Scored]) -> None:
        """Reward of ``prompt ⊕ committed ⊕ segment`` for each item, in one reward batch."""
        assert self.reward is not None
        scores = self.reward.score(self.committed, [s.segment.tokens for s in items])
        for i, item in enumerate(items):
            item.trial.reward, item.trial.reward_components = scores.row(i)

    def gains(self, segment: Segment, candidates: list[int]) -> torch.Tensor:
        """Predicted reward change of swapping ``segment``'s first token for each candidate."""
        assert self.reward is not None
        if self.cfg.nudge_scoring == "exact":
            return self.reward.exact_gains(self.committed, segment.tokens, candidates)
        return self.reward.gradient_gains(self.committed, segment.tokens, candidates)

    def score_with_gains(self, item: Scored, candidates: list[int]) -> torch.Tensor:
        """Score ``item`` and compute its candidates' gains, in one reward pass where the session can."""
        assert self.reward is not None
        if self.cfg.nudge_scoring == "exact":
            self.score([item])
            return self.gains(item.segment, candidates)
        scores, gains = self.reward.score_and_gradient_gains(self.committed, item.segment.tokens, candidates)
        item.trial.reward, item.trial.reward_components = scores.row(0)
        return gains

    # -- result -------------------------------------------------------------------------------

    def result(self, finish: str, reward: tuple[float, dict[str, float]] | None = None) -> GGROResult:
        if reward is None and self.reward is not None:
            reward = self._final_reward()
        usage = self.reward.usage if self.reward else RewardUsage()
        self.policy.close()  # nothing decodes after this; a server session counts the requests it closes
        policy = self.policy.usage
        stats = GGROStats(
            prompt_tokens=len(self.call.prompt_ids),
            new_tokens=len(self.committed),
            policy_forward_passes=policy.forward_passes,
            policy_tokens_processed=policy.tokens_processed,
            policy_prompt_tokens_cached=policy.prompt_tokens_cached,
            policy_prompt_tokens_reprocessed=policy.prompt_tokens_reprocessed,
            policy_requests_aborted=policy.requests_aborted,
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
            text=self.response.text(),
            token_ids=list(self.committed),
            reward=reward[0] if reward else None,
            interventions=list(self.events),
            stats=stats,
            finish_reason=finish,
            strategy=self.call.strategy,
            reward_components=reward[1] if reward else {},
            config=self.cfg.to_dict(),
            reward_model=self.call.reward.name if self.call.reward else "",
        )

    def _final_reward(self) -> tuple[float, dict[str, float]]:
        assert self.reward is not None
        # The last trigger's accepted segment is the last thing committed (a segment ends only at
        # another trigger or at the end), so its measured reward is the full response's reward.
        last = self.events[-1] if self.events else None
        if last is not None and last.best_reward is not None:
            return last.best_reward, dict(last.best_reward_components)
        # Everything but the last token as the (cached) prefix: no second read of the response.
        return self.reward.score(self.committed[:-1], [self.committed[-1:]]).row(0)

    def close(self) -> None:
        self.policy.close()
