"""The in-process backend: a Hugging Face causal LM decoding over one KV cache per generation.

The session keeps a single-row cache of the prompt and whatever response tokens
it last fed. Each ``decode`` first makes the cache hold exactly ``prompt ⊕
committed`` — cropping what a rejected candidate left and feeding, in one
forward, what a newly committed segment adds — then forks it for the rows and
decodes them in lockstep. So the prompt is read once per generation, and every
candidate at a trigger costs only its own segment.
"""

from __future__ import annotations

import inspect
from typing import Any, Collection, Sequence

import torch

from ..decoding.policy import context_window, eos_token_ids
from ..decoding.rules import BaseRule, token_entropy
from ..decoding.segments import Segment, SegmentRules
from ..kv_cache import cache_kwargs, cache_length, crop_cache, new_cache, select_row
from .base import NextToken, PolicyBackend, PolicySession, PolicyUsage, Sampling


class LogitsNextToken(NextToken):
    """A next-token distribution known in full: one row of logits (-inf where a grammar forbids a token)."""

    def __init__(self, logits: torch.Tensor, entropy: float | None = None, *, constrained: bool = False) -> None:
        self.logits = logits  # [1, vocab], float32
        self.entropy = float(_entropy(logits)[0]) if entropy is None else entropy
        self.constrained = constrained

    def top_k(self, k: int, exclude: Collection[int] = ()) -> list[int]:
        row = self.logits[0]
        allowed = int(torch.isfinite(row).sum()) if self.constrained else row.shape[-1]
        order = row.topk(min(k + len(exclude), allowed)).indices.tolist()
        return [t for t in order if t not in exclude][:k]


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each row; rows a grammar masked (-inf entries) count only their allowed tokens."""
    entropy = token_entropy(logits)
    if torch.isnan(entropy).any():  # 0 * -inf: a masked row
        from ..constraints import masked_entropy

        return masked_entropy(logits)
    return entropy


def _is_constrained(hooks: Any, vocab: int) -> bool:
    state = getattr(hooks, "state", None)
    return state is not None and state.allowed_count() < min(vocab, state.grammar.vocab_size)


class PolicyRunner:
    """Runs the policy one chunk at a time over a cache, counting the work done."""

    def __init__(self, model: Any, usage: PolicyUsage) -> None:
        self.model = model
        self.usage = usage
        params = inspect.signature(type(model).forward).parameters
        self._keep_last = "logits_to_keep" in params

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @torch.no_grad()
    def forward(self, ids: torch.Tensor | Sequence[Sequence[int]], cache: Any) -> torch.Tensor:
        """Feed ``ids`` (``[batch, length]``) after ``cache``; returns last-position logits ``[batch, vocab]``."""
        ids = torch.as_tensor(ids, device=self.device)
        extra = {"logits_to_keep": 1} if self._keep_last else {}
        out = self.model(input_ids=ids, **cache_kwargs(self.model, cache), **extra)
        self.usage.forward_passes += 1
        self.usage.tokens_processed += ids.numel()
        return out.logits[:, -1, :].float()


class TransformersBackend(PolicyBackend):
    """A ``transformers`` causal LM in this process (any device, any dtype)."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self._eos_ids = eos_token_ids(model, tokenizer)
        self._context_window = context_window(model)

    @property
    def name(self) -> str:
        from ..policies import policy_display_name

        return policy_display_name(self.model)

    @property
    def eos_ids(self) -> set[int]:
        return self._eos_ids

    @property
    def context_window(self) -> int | None:
        return self._context_window

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def open(self, prompt_ids: Sequence[int], rules: SegmentRules, sampling: Sampling) -> TransformersSession:
        return TransformersSession(self, list(prompt_ids), rules, sampling)


class TransformersSession(PolicySession):
    def __init__(self, backend: TransformersBackend, prompt_ids: list[int], rules: SegmentRules, sampling: Sampling):
        self.usage = PolicyUsage()
        self.runner = PolicyRunner(backend.model, self.usage)
        self.prompt_ids = prompt_ids
        self.rules = rules
        device = self.runner.device
        generator = torch.Generator(device=device if device.type != "mps" else "cpu").manual_seed(sampling.seed)
        self.rule = BaseRule(sampling.temperature, sampling.top_p, generator)
        self.cache: Any = None
        self.cached: list[int] = []  # the ids the single-row cache holds, prompt first

    def start(self, hooks: Any = None) -> NextToken:
        self.cache = new_cache(self.runner.model.config)
        self.cached = list(self.prompt_ids)
        logits = self.runner.forward([self.prompt_ids], self.cache)
        if hooks is None or not hooks.active:
            return LogitsNextToken(logits)
        return LogitsNextToken(hooks(logits), constrained=_is_constrained(hooks, logits.shape[-1]))

    def decode(
        self,
        committed: Sequence[int],
        start: NextToken,
        first_tokens: Sequence[int | None],
        *,
        min_tokens: int | None = None,
        max_tokens: int | None = None,
        hooks: Any = None,
    ) -> list[Segment]:
        if not isinstance(start, LogitsNextToken):
            raise TypeError(f"the transformers backend decodes from its own LogitsNextToken, not {type(start).__name__}")
        self._hold(self.prompt_ids + list(committed))
        rows = len(first_tokens)
        row_rules = self.rules.row(committed, min_tokens=min_tokens, max_tokens=max_tokens)
        segments = [Segment() for _ in range(rows)]
        fed: list[list[int]] = [[] for _ in range(rows)]  # response tokens each row put into the cache
        active = list(range(rows))  # segment index of each cache / logits row
        # Each row decodes under its own fork of the grammar / processor state at prompt ⊕ committed.
        row_hooks = [hooks.fork() for _ in range(rows)] if hooks is not None and hooks.active else None
        logits = start.logits.expand(rows, -1)  # `start` is already masked for that state
        if rows > 1:
            self.cache.batch_repeat_interleave(rows)
        first_step = True
        while active:
            self.rules.check_cancelled()
            if row_hooks is not None and not first_step:
                for row, i in enumerate(active):
                    logits[row] = row_hooks[i](logits[row : row + 1])[0]
            first_step = False
            # One device-to-host transfer each per step, not one per row (matters on GPUs).
            entropy = (_entropy(logits) if row_hooks is not None else token_entropy(logits)).tolist()
            chosen = self.rule(logits).tolist()
            still: list[int] = []  # rows of this step that go on
            for row, i in enumerate(active):
                seg = segments[i]
                forced_by_grammar = row_hooks is not None and row_hooks[i].forced_token() is not None
                if row_rules.ends_before(seg, entropy[row], forced=forced_by_grammar):
                    constrained = row_hooks is not None and _is_constrained(row_hooks[i], logits.shape[-1])
                    seg.end = LogitsNextToken(logits[row : row + 1].clone(), entropy[row], constrained=constrained)
                    continue
                forced = first_tokens[i] if not seg.tokens else None
                token = int(forced) if forced is not None else chosen[row]
                if row_hooks is not None and token not in self.rules.eos_ids:
                    row_hooks[i].advance(token)  # raises GrammarViolationError for a forbidden forced token
                if row_rules.add(seg, token, entropy[row]):
                    still.append(row)
            if not still:
                break
            if len(still) < len(active):
                # Finished rows leave the batch, so no compute is spent on them.
                self.cache.batch_select_indices(torch.tensor(still, device=logits.device))
                active = [active[row] for row in still]
            step = [segments[i].tokens[-1] for i in active]
            for i, token in zip(active, step):
                fed[i].append(token)
            logits = self.runner.forward([[t] for t in step], self.cache)
        self._after(rows, fed[0] if rows == 1 else None, len(self.prompt_ids) + len(committed))
        return segments

    # -- cache bookkeeping --------------------------------------------------------------

    def _hold(self, ids: list[int]) -> None:
        """Make the single-row cache hold exactly ``ids``: crop what differs, feed what is missing."""
        cached = self.cached
        if cached == ids:
            return
        keep = _common_prefix_length(cached, ids)
        crop_cache(self.cache, keep)
        if keep < len(ids):
            # One forward over what is new (a committed segment): cost proportional to it, not the context.
            self.runner.forward([ids[keep:]], self.cache)
        self.cached = list(ids)

    def _after(self, rows: int, fed: list[int] | None, prefix_len: int) -> None:
        if fed is not None:
            self.cached = self.cached + fed
            return
        # Rows left the batched cache as they finished: keep one row, back at the shared prefix.
        select_row(self.cache, 0)
        crop_cache(self.cache, prefix_len)
        self.cached = self.cached[:prefix_len]
        assert cache_length(self.cache) == len(self.cached)

    def close(self) -> None:
        self.cache, self.cached = None, []


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if list(a[:n]) == list(b[:n]):
        return n
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
