"""Tiny in-process models for the LangChain tests (no hub, each call well under a second).

``tiny_decoder()`` is GGRO over a random tiny Llama whose tokenizer has a chat
template that renders tools. ``scripted_decoder(script)`` makes the same policy
write a chosen text (a large logit bonus on the scripted token at each step),
so tool calls and stop sequences can be tested on known output.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import torch
from transformers import LlamaForCausalLM

from ggro_integrations import GGRODecoder
from ggro_integrations.langchain.tools import CHATML_TOOLS_TEMPLATE
from ggro_integrations.rewards import HFRewardModel
from ggro_integrations.testing import tiny_causal_lm, tiny_reward_model, tiny_tokenizer

# Low threshold and small budgets: a few triggers per call, each call ~0.1-0.3 s on one core.
FAST = {"entropy_threshold": 0.5, "max_new_tokens": 12, "num_refinements": 2, "nudge_top_k": 5}


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


class ScriptedLlama(LlamaForCausalLM):
    """A Llama that writes ``script_for(prompt_text)`` and then EOS, whatever its weights say."""

    script_for: Callable[[str], str] = staticmethod(lambda prompt: "")
    tokenizer: Any = None
    prompts: list[str]

    def forward(self, input_ids: Any = None, cache: Any = None, logits_to_keep: int = 0, **kwargs: Any) -> Any:
        past = cache.get_seq_length() if cache is not None else 0
        out = super().forward(input_ids=input_ids, cache=cache, logits_to_keep=logits_to_keep, **kwargs)
        if past == 0:  # the prefill: remember the prompt and choose the script
            prompt = self.tokenizer.decode(input_ids[0].tolist())
            self.prompts.append(prompt)
            self._prompt_len = input_ids.shape[1]
            ids = self.tokenizer.encode(self.script_for(prompt), add_special_tokens=False)
            self._script = ids + [self.tokenizer.eos_token_id]
        step = past + input_ids.shape[1] - self._prompt_len  # index of the response token to predict
        target = self._script[min(step, len(self._script) - 1)]
        out.logits[:, -1, target] += 1e4
        return out


def scripted_decoder(script_for: Callable[[str], str], **config: Any) -> GGRODecoder:
    """A decoder whose policy writes ``script_for(prompt)``; ``.model.prompts`` records every prompt seen."""
    tokenizer, policy, reward_a, _ = parts()
    model_config = copy.deepcopy(policy.config)
    model_config.max_position_embeddings = 2048  # tool prompts in a 384-token vocabulary are long; RoPE has no table
    torch.manual_seed(0)
    model = ScriptedLlama(model_config).eval()
    model.load_state_dict(policy.state_dict())
    model.generation_config = policy.generation_config
    model.script_for = script_for  # an instance attribute: called unbound
    model.tokenizer = tokenizer
    model.prompts = []
    return GGRODecoder(model, tokenizer, reward_a, **{**FAST, "num_refinements": 0, "max_new_tokens": 64, **config})


def timeless(events: list[Any]) -> list[dict[str, Any]]:
    """Event dicts without their wall-clock ``seconds`` (the only field two equal runs may differ in)."""
    dicts = [e if isinstance(e, dict) else e.to_dict() for e in events]
    return [{k: v for k, v in d.items() if k != "seconds"} for d in dicts]
