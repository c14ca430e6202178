"""Tiny in-process models for the LangChain tests (no hub, each call well under a second).

``tiny_decoder()`` is GGRO over a random tiny Llama whose tokenizer has a chat
template that renders tools; ``scripted_decoder(script)`` is the public fake of
``ggro_integrations.testing`` (known output for tool calls and stop sequences).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

from transformers import LlamaForCausalLM

from ggro_integrations import GGRODecoder, testing
from ggro_integrations.rewards import HFRewardModel
from ggro_integrations.testing import tiny_causal_lm, tiny_reward_model, tiny_tokenizer
from ggro_integrations.tools import CHATML_TOOLS_TEMPLATE

FAST = testing.FAST_SETTINGS


@functools.cache
def parts() -> tuple[Any, Any, HFRewardModel, HFRewardModel]:
    """(tokenizer with a tool template, policy, reward "tiny-a", reward "tiny-b")."""
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = CHATML_TOOLS_TEMPLATE
    policy = tiny_causal_lm(tokenizer)
    reward_a = HFRewardModel(tiny_reward_model(tokenizer, seed=1), tokenizer, name="tiny-a")
    reward_b = HFRewardModel(tiny_reward_model(tokenizer, seed=2), tokenizer, name="tiny-b")
    return tokenizer, policy, reward_a, reward_b


def tiny_decoder(**config: Any) -> GGRODecoder:
    tokenizer, policy, reward_a, _ = parts()
    return GGRODecoder(policy, tokenizer, reward_a, **{**FAST, **config})


def long_context_decoder(**config: Any) -> GGRODecoder:
    """``tiny_decoder`` with a 2048-token window (same weights: RoPE has no position table), for long
    tool prompts, which a 384-token vocabulary makes several hundred tokens long."""
    tokenizer, policy, reward_a, _ = parts()
    return GGRODecoder(_long(policy), tokenizer, reward_a, **{**FAST, **config})


@functools.cache
def _long(policy: Any) -> Any:
    model_config = copy.deepcopy(policy.config)
    model_config.max_position_embeddings = 2048
    model = LlamaForCausalLM(model_config).eval()
    model.load_state_dict(policy.state_dict())
    model.generation_config = policy.generation_config
    return model


def scripted_decoder(script_for: Callable[[str], str], **config: Any) -> GGRODecoder:
    """A decoder whose policy (``testing.scripted_causal_lm``) writes ``script_for(prompt)``;
    ``.model.prompts`` records every prompt seen."""
    tokenizer, _, reward_a, _ = parts()
    model = testing.scripted_causal_lm(tokenizer, script_for)
    return GGRODecoder(model, tokenizer, reward_a, **{**FAST, "num_refinements": 0, "max_new_tokens": 64, **config})


def timeless(events: list[Any]) -> list[dict[str, Any]]:
    """Event dicts without their wall-clock ``seconds`` (the only field two equal runs may differ in)."""
    dicts = [e if isinstance(e, dict) else e.to_dict() for e in events]
    return [{k: v for k, v in d.items() if k != "seconds"} for d in dicts]
