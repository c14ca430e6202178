"""LogitsHooks: user LogitsProcessors and the grammar mask behind one per-row interface."""

from __future__ import annotations

import math

import pytest
import torch
from grammar_loop import generate, text_of
from transformers import (
    LogitsProcessorList,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensLogitsProcessor,
)

from ggro_integrations.constraints import Grammar, LogitsHooks, allowed_top_k, masked_entropy
from ggro_integrations.errors import ConfigError, GrammarError, GrammarViolationError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Recorder:
    """A processor that records what it is given and changes nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], torch.Tensor]] = []

    def __call__(self, input_ids, scores):
        self.calls.append((input_ids[0].tolist(), scores.clone()))
        return scores


def test_processors_alone_match_transformers_generate(tokenizer, policy):
    """The adapter hands processors what generate() does: prompt + generated ids, [1, vocab] scores."""
    prompt = tokenizer.encode("The water is hot and the air is")
    procs = [RepetitionPenaltyLogitsProcessor(1.8), NoRepeatNGramLogitsProcessor(2)]
    ours, _ = generate(policy, LogitsHooks(processors=procs, prompt_ids=prompt), prompt, [tokenizer.eos_token_id], max_new_tokens=24)
    with torch.no_grad():
        ref = policy.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            logits_processor=LogitsProcessorList(procs),
            do_sample=False,
            max_new_tokens=24,
            pad_token_id=tokenizer.pad_token_id,
        )[0, len(prompt):].tolist()
    assert ours == ref[: len(ours)] and len(ours) == len(ref)
    # Without the processors greedy decoding differs: the comparison above is not vacuous.
    plain, _ = generate(policy, LogitsHooks(), prompt, [tokenizer.eos_token_id], max_new_tokens=24)
    assert plain != ours


def test_processors_see_masked_scores_and_the_row_ids(tokenizer):
    grammar = Grammar.from_regex("(hello|help) world", tokenizer)
    recorder = Recorder()
    hooks = LogitsHooks(grammar, [recorder], prompt_ids=[5, 6, 7])
    scores = hooks(torch.zeros(len(tokenizer)))
    ids, seen = recorder.calls[-1]
    assert ids == [5, 6, 7] and seen.shape == (1, len(tokenizer))
    assert torch.equal(torch.isfinite(seen[0]), hooks.state.allowed(len(tokenizer)))
    token = int(scores.argmax())
    hooks.advance(token)
    hooks(torch.zeros(len(tokenizer)))
    assert recorder.calls[-1][0] == [5, 6, 7, token]


def test_the_grammar_has_the_last_word(tokenizer):
    """A processor that rewrites every score cannot bring back a token the grammar forbids."""
    grammar = Grammar.from_regex("yes|no", tokenizer)
    flatten = lambda ids, scores: torch.zeros_like(scores)
    hooks = LogitsHooks(grammar, [flatten])
    scores = hooks(torch.randn(1, len(tokenizer)))
    assert torch.equal(torch.isfinite(scores[0]), grammar.start().allowed(len(tokenizer)))
    # A processor that removes some allowed tokens narrows the choice further.
    first = [t for t in grammar.start().allowed().nonzero().flatten().tolist()]
    suppress = SuppressTokensLogitsProcessor(first[:-1], device="cpu")
    kept = LogitsHooks(grammar, [suppress])(torch.randn(1, len(tokenizer)))
    assert torch.isfinite(kept[0]).nonzero().flatten().tolist() == first[-1:]


def test_constrained_greedy_with_a_processor_stays_in_the_grammar(tokenizer, policy):
    grammar = Grammar.from_json_schema({"enum": ["the water", "the air", "hot"]}, tokenizer)
    hooks = LogitsHooks(grammar, [RepetitionPenaltyLogitsProcessor(2.0)], prompt_ids=tokenizer.encode("x"))
    ids, ended = generate(policy, hooks, tokenizer.encode("x"), [tokenizer.eos_token_id])
    assert ended and text_of(tokenizer, ids) in {'"the water"', '"the air"', '"hot"'}


def test_no_allowed_token_left_is_an_error_naming_the_cause(tokenizer):
    grammar = Grammar.from_regex("ab", tokenizer)
    kill_all = lambda ids, scores: torch.full_like(scores, float("-inf"))
    with pytest.raises(GrammarError, match="processors left no allowed token"):
        LogitsHooks(grammar, [kill_all])(torch.zeros(len(tokenizer)))
    allowed = grammar.start().allowed().nonzero().flatten().tolist()
    with pytest.raises(GrammarError, match="width of these scores"):
        LogitsHooks(grammar)(torch.zeros(min(allowed)))  # logits narrower than the vocabulary


def test_bad_processors_and_shapes(tokenizer):
    with pytest.raises(ConfigError, match=r"logits_processors\[1\]"):
        LogitsHooks(processors=[lambda i, s: s, "not a processor"])
    wrong = lambda ids, scores: scores[:, :10]
    with pytest.raises(ConfigError, match="must return scores shaped"):
        LogitsHooks(processors=[wrong])(torch.zeros(len(tokenizer)))
    with pytest.raises(ConfigError, match="one row"):
        LogitsHooks(Grammar.from_regex("a", tokenizer))(torch.zeros(2, len(tokenizer)))
    with pytest.raises(ConfigError, match="grammar must be a Grammar"):
        LogitsHooks("start: x")


def test_fork_copies_grammar_state_and_ids(tokenizer):
    grammar = Grammar.from_regex("(ab|ac)d", tokenizer)
    recorder = Recorder()
    hooks = LogitsHooks(grammar, [recorder], prompt_ids=torch.tensor([[1, 2]]))
    a = tokenizer.convert_tokens_to_ids("a")
    hooks.advance(a)
    twin = hooks.fork()
    twin.advance(tokenizer.convert_tokens_to_ids("b"))
    assert hooks.state.tokens_consumed == 1 and twin.state.tokens_consumed == 2
    hooks(torch.zeros(len(tokenizer)))
    assert recorder.calls[-1][0] == [1, 2, a]
    with pytest.raises(GrammarViolationError):
        twin.advance(tokenizer.convert_tokens_to_ids("c"))  # "abc" is not in the language
    hooks.advance(tokenizer.convert_tokens_to_ids("c"))  # "ac" is


def test_forced_token_can_end_is_finished():
    free = LogitsHooks()
    assert not free.active and free.forced_token() is None and free.can_end() and not free.is_finished()
    scores = torch.randn(10)
    assert free(scores) is scores


def test_masked_entropy_is_the_entropy_of_the_allowed_distribution():
    scores = torch.tensor([[1.0, float("-inf"), 2.0, float("-inf"), 0.5]])
    p = torch.softmax(torch.tensor([1.0, 2.0, 0.5]), dim=-1)
    expected = float(-(p * p.log()).sum())
    assert math.isclose(float(masked_entropy(scores)), expected, rel_tol=1e-6)
    # The naive formula gives NaN on a masked row: this is why the decoder needs masked_entropy.
    logp = torch.log_softmax(scores, dim=-1)
    assert torch.isnan(-(logp.exp() * logp).sum())
    assert float(masked_entropy(torch.tensor([0.0, float("-inf")]))) == 0.0  # one allowed token: no uncertainty


def test_allowed_top_k_never_returns_a_masked_token():
    scores = torch.full((1, 50), float("-inf"))
    scores[0, [3, 7, 9]] = torch.tensor([0.1, 0.9, 0.5])
    assert allowed_top_k(scores, 25) == [7, 9, 3]
    assert allowed_top_k(scores, 25, exclude={9}) == [7, 3]
    assert allowed_top_k(scores, 2) == [7, 9]
    assert allowed_top_k(torch.full((5,), float("-inf")), 3) == []
