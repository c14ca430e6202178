"""Entropy of a next-token distribution known only through its top-N probabilities.

Serving engines return the N most likely tokens' log-probabilities per position
(vLLM ``logprobs``, llama-server ``n_probs``, SGLang ``top_logprobs_num``), not the
whole distribution. With the top-N probabilities ``p_1 >= ... >= p_N`` of a vocabulary
of ``V`` tokens, the tail mass is ``r = 1 - sum(p)`` and every one of the ``M = V - N``
tail tokens has probability at most ``p_N``. Writing ``H_N = -sum p_i ln p_i``:

* **lower bound**: the tail's entropy is smallest when its mass is packed into as
  few tokens as possible, i.e. ``k = floor(r / p_N)`` tokens of ``p_N`` and one of
  the remainder ``s = r - k p_N``. So ``H >= H_N + k p_N ln(1/p_N) + s ln(1/s)``,
  which is at least the textbook ``H_N + r ln(1/p_N)`` (equal when ``r`` is a
  multiple of ``p_N``).
* **upper bound**: it is largest when the mass is spread evenly over all ``M``
  tail tokens: ``H <= H_N + r ln(M / r)``.

The gap is wide (``ln M`` is about 10.8 nats for SmolLM2's 49 152 tokens), so the
trigger needs a point estimate. :func:`topn_entropy` gives the bounds and a
*geometric tail* estimate: the tail continues the top-N's decay as
``q_j = p_N rho^j`` (j = 1, 2, ...) with ``rho`` chosen so the tail sums to ``r``
(``rho = r / (r + p_N)``). That is the maximum-entropy tail with the right mass
and the right expected rank, has a closed form, needs no fitting, and is clamped
into the bounds. ``docs/scaling-out.md`` records how often a trigger decided on
each estimator agrees with the exact entropy on SmolLM2-135M (the geometric tail
agreed best there; the lower bound never triggers when the exact entropy is below
the threshold, and misses more).

Everything here is plain Python on at most a few dozen numbers per position: it
runs per generated token on the client, next to the HTTP call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

Estimator = Literal["geometric", "lower", "midpoint"]
ESTIMATORS: tuple[Estimator, ...] = ("geometric", "lower", "midpoint")

# Top-N probabilities arrive as float32 log-probabilities; their sum can exceed 1 by
# a few ulps. Tail masses below this are treated as zero (no tail).
_TAIL_EPS = 1e-7


@dataclass(frozen=True)
class TopNEntropy:
    """Entropy bounds and point estimate (nats) from one position's top-N."""

    estimate: float
    lower: float
    upper: float
    head: float
    """``H_N = -sum p_i ln p_i`` over the returned tokens alone."""
    tail_mass: float
    """``r = 1 - sum p_i``: the probability of every token not returned."""
    n: int

    @property
    def exact(self) -> bool:
        """True when the bounds coincide (no tail): the estimate is the entropy."""
        return self.upper - self.lower <= 1e-9


def _xlogx_inv(p: float) -> float:
    """``p ln(1/p)`` with the limit 0 at ``p = 0``."""
    return -p * math.log(p) if p > 0.0 else 0.0


def entropy_bounds(probs: Sequence[float], vocab_size: int) -> tuple[float, float, float, float]:
    """``(lower, upper, head, tail_mass)`` for top-N ``probs`` (any order) of a ``vocab_size`` vocabulary."""
    if not probs:
        raise ValueError("probs is empty: ask the server for at least one top log-probability (N >= 1).")
    n = len(probs)
    if vocab_size < n:
        raise ValueError(f"vocab_size={vocab_size} is smaller than the {n} probabilities given.")
    ordered = sorted((max(0.0, float(p)) for p in probs), reverse=True)
    head = sum(_xlogx_inv(p) for p in ordered)
    tail = 1.0 - sum(ordered)
    tail_tokens = vocab_size - n
    if tail <= _TAIL_EPS or tail_tokens == 0:
        return head, head, head, max(0.0, tail)
    p_min = ordered[-1]
    if p_min <= 0.0:
        # A returned token of probability 0 means the tail is empty too (every tail
        # token has at most p_N); the reported mass is rounding.
        return head, head, head, tail
    # Lower: k whole tokens of p_N and the remainder; never more tokens than the tail has.
    k = min(int(tail / p_min), tail_tokens)
    rest = max(0.0, tail - k * p_min) if k < tail_tokens else 0.0
    lower = head + k * _xlogx_inv(p_min) + _xlogx_inv(rest)
    upper = head + tail * math.log(tail_tokens / tail)
    # float rounding can invert them by ~1e-12 on a near-empty tail
    return min(lower, upper), max(lower, upper), head, tail


def _geometric_tail(p_min: float, tail: float) -> float:
    """Entropy of the tail ``q_j = p_min * rho**j`` (j >= 1) whose mass is ``tail``."""
    rho = tail / (tail + p_min)
    # sum q_j ln(1/q_j) = tail ln(1/p_min) - p_min ln(rho) sum j rho^j
    #                   = tail ln(1/p_min) - p_min ln(rho) rho / (1 - rho)^2
    one_minus = p_min / (tail + p_min)
    return tail * math.log(1.0 / p_min) - p_min * math.log(rho) * rho / (one_minus * one_minus)


def topn_entropy(logprobs: Sequence[float], vocab_size: int, estimator: Estimator = "geometric") -> TopNEntropy:
    """Bounds and a point estimate of the entropy from top-N log-probabilities.

    ``logprobs`` are natural-log probabilities of the N most likely tokens under the
    *full* softmax (what vLLM's raw logprobs and llama-server's pre-sampling
    ``n_probs`` are), in any order; ``vocab_size`` is the policy's vocabulary size
    (rows of its output layer). ``estimator`` picks the point estimate:
    ``"geometric"`` (default, see the module docstring), ``"lower"`` (the lower
    bound: a trigger decided on it never fires where the exact entropy is below the
    threshold) or ``"midpoint"`` of the bounds.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r}; use one of {', '.join(ESTIMATORS)}.")
    probs = [math.exp(lp) for lp in logprobs]
    lower, upper, head, tail = entropy_bounds(probs, vocab_size)
    if upper - lower <= 1e-12:
        estimate = lower
    elif estimator == "lower":
        estimate = lower
    elif estimator == "midpoint":
        estimate = 0.5 * (lower + upper)
    else:
        estimate = min(upper, max(lower, head + _geometric_tail(min(probs), tail)))
    return TopNEntropy(estimate=estimate, lower=lower, upper=upper, head=head, tail_mass=tail, n=len(probs))
