"""``GGRODecoder``: entropy-triggered, reward-gradient-guided decoding over any policy backend.

The one front door every other front door (CLI, LangChain, LlamaIndex) calls:
``prepare`` validates a call once, ``generate`` and ``stream`` run it. The
policy is reached only through a ``PolicyBackend`` (in-process transformers
by default), the reward model only through its session.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Generator

import torch

from ..backends.base import PolicyBackend
from ..backends.transformers import TransformersBackend
from ..config import GGROConfig
from ..conversation import Prompt, as_conversation
from ..errors import ConfigError, PromptError
from ..rewards.base import RewardModel
from .best_of_n import run_best_of_n
from .call import CallOptions, CallSettings, PreparedCall
from .constraint import constraint_for
from .generation import Generation
from .ggro import run_ggro
from .policy import encode_prompt, uses_chat_template
from .result import GenerationStream, GGROResult, StreamItem


class GGRODecoder:
    """Gradient-Guided Reward Optimization over a Hugging Face causal LM (or any ``PolicyBackend``).

    Example:
        >>> decoder = GGRODecoder(model, tokenizer, HFRewardModel(rm, rm_tok))   # doctest: +SKIP
        >>> result = decoder.generate("How do I sharpen a kitchen knife?")       # doctest: +SKIP
        >>> result.text, result.reward, len(result.interventions)                # doctest: +SKIP

    ``reward_model`` takes a ``RewardModel`` or any spec ``load_reward_model``
    accepts (a registered name, a path, a ``{name: weight}`` mapping).
    ``load_options`` (``device``, ``dtype``) are used for reward models named per
    call, so they come from the registry's cache next to the ones already loaded.
    """

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        reward_model: Any = None,
        config: GGROConfig | None = None,
        *,
        backend: PolicyBackend | None = None,
        load_options: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        if backend is None:
            if model is None or tokenizer is None:
                raise ConfigError("GGRODecoder needs a policy: pass model and tokenizer, or backend=.")
            backend = TransformersBackend(model, tokenizer)
        elif model is not None or tokenizer is not None:
            raise ConfigError("pass either model and tokenizer, or backend=, not both.")
        self.backend = backend
        self.model = getattr(backend, "model", None)
        """The in-process policy model (None when the policy runs elsewhere)."""
        self.tokenizer = backend.tokenizer
        self.config = (config or GGROConfig()).replace(**overrides)
        self.load_options = dict(load_options or {})
        self.reward_model: RewardModel | None = None
        self.reward_model = self.resolve_reward_model(reward_model)
        self.eos_ids = backend.eos_ids
        self.context_window = backend.context_window

    @property
    def device(self) -> torch.device:
        """Where the policy runs (CPU for a remote policy); reward models named per call go next to it."""
        return self.backend.device

    # -- calls --------------------------------------------------------------------------

    def resolve_reward_model(self, spec: Any) -> RewardModel | None:
        """``spec`` as a ``RewardModel`` checked against the policy's tokenizer (None: the decoder's own)."""
        if spec is None:
            return self.reward_model
        if isinstance(spec, RewardModel):
            reward = spec
        else:
            from ..rewards.registry import load_reward_model

            options = dict(self.load_options)
            if options.get("device") is None and self.device.type != "cpu":
                options["device"] = str(self.device)  # a reward model named per call lives next to the policy
            reward = load_reward_model(spec, device=options.get("device"), dtype=options.get("dtype"))
        if reward is not self.reward_model:
            reward.check_policy_tokenizer(self.tokenizer)
        return reward

    def settle(self, options: CallOptions | None = None, **kwargs: Any) -> CallSettings:
        """Resolve and validate options against this decoder (config, strategy, reward model), no prompt needed.

        ``kwargs`` are options in the one vocabulary (any ``GGROConfig`` field,
        ``strategy``, ``reward_model``, ``tools``); they win over ``options``.
        Adapters call this at construction so bad settings fail there.
        """
        opts = CallOptions.parse(kwargs, where="GGRODecoder").over(options or CallOptions())
        if not self.backend.supports_constraints and (opts.tools or opts.grammar is not None or opts.logits_processors):
            what = "tools" if opts.tools else "grammar" if opts.grammar is not None else "logits_processors"
            raise ConfigError(f"{what}= is not supported on {type(self.backend).__name__} ({self.backend.name}): "
                              "it decodes with the engine's top-N log-probabilities, and a grammar or logits "
                              "processor needs the full logits at every step. Use the in-process backend for it.")
        config = self.config.replace(**opts.config)
        reward = self.resolve_reward_model(opts.reward_model)
        tools = list(opts.tools) if opts.tools else None
        grammar = constraint_for(opts, tools, self.tokenizer, self.eos_ids)
        return CallSettings(
            config, opts.strategy or "ggro", reward, tools, grammar, tuple(opts.logits_processors or ())
        )

    def prepare(self, prompt: Prompt, options: CallOptions | None = None, **kwargs: Any) -> PreparedCall:
        """Validate one call — options, reward model, prompt and its length — before any decoding."""
        settings = self.settle(options, **kwargs)
        cfg, strategy, reward = settings.config, settings.strategy, settings.reward
        if settings.needs_reward and reward is None:
            # With no refinements GGRO only monitors entropy, which needs no reward model.
            raise ConfigError(
                f"strategy={strategy!r} needs a reward model; pass reward_model= to GGRODecoder or to this call."
            )
        if strategy == "ggro" and cfg.num_refinements > 0 and cfg.nudge_scoring == "gradient":
            assert reward is not None
            if not reward.supports_gradient:
                raise ConfigError(f"reward model {reward.name!r} cannot compute gradients; set nudge_scoring='exact'.")
        conversation = as_conversation(prompt)
        prompt_ids = self._encode(prompt, conversation, settings)
        self._check_length(len(prompt_ids), cfg)
        return PreparedCall(
            cfg,
            strategy,
            reward,
            settings.tools,
            settings.grammar,
            settings.logits_processors,
            conversation=conversation,
            prompt_ids=prompt_ids,
        )

    def prompt_ids(self, prompt: Prompt, options: CallOptions | None = None, **kwargs: Any) -> list[int]:
        """The policy token ids ``prepare`` would feed for ``prompt`` (chat template, tools), without
        checking them against the context window: for counting, e.g. to trim a conversation to fit."""
        return self._encode(prompt, as_conversation(prompt), self.settle(options, **kwargs))

    def _encode(self, prompt: Prompt, conversation: list[dict[str, Any]], settings: CallSettings) -> list[int]:
        chat = uses_chat_template(self.tokenizer, prompt, settings.config.use_chat_template)
        return encode_prompt(self.tokenizer, conversation, chat=chat, tools=settings.tools, allow_special_tokens_in_content=settings.config.allow_special_tokens_in_content)  # noqa: E501

    def generate(self, prompt: Prompt | PreparedCall, **options: Any) -> GGROResult:
        """Generate a response to ``prompt`` (a string, chat messages, or a ``PreparedCall``).

        ``strategy`` is ``"ggro"`` (default), ``"greedy"`` (no intervention) or
        ``"best_of_n"`` (``best_of_n`` samples, keep the highest reward). Any
        ``GGROConfig`` field, ``reward_model`` and ``tools`` apply to this call only.
        """
        stream = self.stream(prompt, **options)
        for _ in stream:
            pass
        assert stream.result is not None
        return stream.result

    def stream(self, prompt: Prompt | PreparedCall, **options: Any) -> GenerationStream:
        """Stream the committed text (``TextDelta``) and the ``InterventionEvent`` s, in order.

        Text is released only once GGRO can no longer replace it; each event
        precedes the text it decided. ``strategy="greedy"`` streams plain decoding
        token by token; ``"best_of_n"`` yields its one answer as a single delta.
        ``stream.result`` holds the full result afterwards.
        """
        if isinstance(prompt, PreparedCall):
            if options:
                raise ConfigError("a PreparedCall already holds its options; pass none with it.")
            call = prompt
        else:
            call = self.prepare(prompt, **options)
        cancelled = threading.Event()
        return GenerationStream(self._steps(call, cancelled), cancelled)

    def _steps(self, call: PreparedCall, cancelled: threading.Event) -> Generator[StreamItem, None, GGROResult]:
        gen = Generation(call, self.backend, cancelled)
        try:
            if call.strategy == "best_of_n":
                return (yield from run_best_of_n(gen))
            return (yield from run_ggro(gen))
        finally:
            gen.close()  # also when the consumer stops early: frees the caches now

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
