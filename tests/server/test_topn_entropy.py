"""The top-N entropy bounds and estimator against exact entropies of random distributions.

Derandomised (as the decoding property test is in CI), so CI always checks the same examples.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ggro_integrations.backends.server.entropy import ESTIMATORS, entropy_bounds, topn_entropy


def exact_entropy(probs: list[float]) -> float:
    return -sum(p * math.log(p) for p in probs if p > 0)


def top_n(probs: list[float], n: int) -> list[float]:
    return sorted(probs, reverse=True)[:n]


@st.composite
def distributions(draw: st.DrawFn) -> tuple[list[float], int]:
    """A normalised distribution over 2..300 tokens (peaked, flat or heavy-tailed) and an N."""
    vocab = draw(st.integers(min_value=2, max_value=300))
    shape = draw(st.sampled_from(["dirichlet", "zipf", "peaked"]))
    seed = draw(st.integers(min_value=0, max_value=2**31 - 1))
    import random

    rng = random.Random(seed)
    if shape == "dirichlet":
        alpha = draw(st.floats(min_value=0.05, max_value=5.0))
        weights = [rng.gammavariate(alpha, 1.0) + 1e-300 for _ in range(vocab)]
    elif shape == "zipf":
        a = draw(st.floats(min_value=0.3, max_value=3.0))
        weights = [(i + 1) ** -a for i in range(vocab)]
        rng.shuffle(weights)
    else:
        weights = [rng.random() * 1e-3 for _ in range(vocab)]
        weights[rng.randrange(vocab)] = 1.0
    total = sum(weights)
    probs = [w / total for w in weights]
    n = draw(st.integers(min_value=1, max_value=vocab))
    return probs, n


@settings(max_examples=400, deadline=None, derandomize=True)
@given(distributions())
def test_bounds_bracket_the_exact_entropy(case: tuple[list[float], int]) -> None:
    probs, n = case
    exact = exact_entropy(probs)
    lower, upper, head, tail = entropy_bounds(top_n(probs, n), len(probs))
    assert lower - 1e-9 <= exact <= upper + 1e-9
    assert head <= lower + 1e-12
    assert tail == pytest.approx(1 - sum(top_n(probs, n)), abs=1e-12)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(distributions())
def test_lower_bound_is_at_least_the_textbook_one(case: tuple[list[float], int]) -> None:
    """H_N + r ln(1/p_N) (the issue's form) never exceeds the packed-tail bound used here."""
    probs, n = case
    top = top_n(probs, n)
    lower, _, head, tail = entropy_bounds(top, len(probs))
    if top[-1] > 0 and tail > 1e-7:
        assert lower >= head + tail * math.log(1 / top[-1]) - 1e-9


@settings(max_examples=300, deadline=None, derandomize=True)
@given(distributions(), st.sampled_from(ESTIMATORS))
def test_every_estimate_lies_within_the_bounds(case: tuple[list[float], int], estimator: str) -> None:
    probs, n = case
    logprobs = [math.log(p) for p in top_n(probs, n) if p > 0]
    if not logprobs:
        return
    est = topn_entropy(logprobs, len(probs), estimator)  # type: ignore[arg-type]
    assert est.lower - 1e-12 <= est.estimate <= est.upper + 1e-12


def test_full_distribution_is_exact() -> None:
    probs = [0.5, 0.25, 0.125, 0.125]
    est = topn_entropy([math.log(p) for p in probs], vocab_size=4)
    assert est.exact
    assert est.estimate == pytest.approx(exact_entropy(probs))


def test_the_lower_bound_is_attained_by_a_packed_tail() -> None:
    # top-2 = (0.4, 0.2); the tail 0.4 = two tokens of 0.2: the lower bound is the entropy itself.
    probs = [0.4, 0.2, 0.2, 0.2] + [0.0] * 6
    lower, upper, _, _ = entropy_bounds([0.4, 0.2], vocab_size=10)
    assert lower == pytest.approx(exact_entropy(probs))
    assert upper > lower


def test_the_upper_bound_is_attained_by_a_uniform_tail() -> None:
    probs = [0.5] + [0.5 / 9] * 9
    _, upper, _, _ = entropy_bounds([0.5], vocab_size=10)
    assert upper == pytest.approx(exact_entropy(probs))


def test_float32_sums_above_one_mean_no_tail() -> None:
    est = topn_entropy([math.log(0.7000001), math.log(0.3000001)], vocab_size=1000)
    assert est.tail_mass <= 0 and est.exact


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"logprobs": [], "vocab_size": 10}, "at least one"),
        ({"logprobs": [-1.0, -2.0], "vocab_size": 1}, "smaller than"),
        ({"logprobs": [-1.0], "vocab_size": 10, "estimator": "median"}, "estimator='median'"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        topn_entropy(**kwargs)


@pytest.mark.parametrize("a", [0.8, 1.1, 1.5])
def test_zipf_estimate_recovers_a_power_law_tail(a: float) -> None:
    """On an exact power law the default estimator extrapolates the tail it was built for."""
    vocab = 50_000
    weights = [(i + 1) ** -a for i in range(vocab)]
    total = sum(weights)
    probs = [w / total for w in weights]
    exact = exact_entropy(probs)
    logprobs = [math.log(p) for p in probs[:20]]
    zipf = topn_entropy(logprobs, vocab, "zipf")
    geometric = topn_entropy(logprobs, vocab, "geometric")
    assert abs(zipf.estimate - exact) < 0.02 * exact
    assert abs(zipf.estimate - exact) < abs(geometric.estimate - exact)
