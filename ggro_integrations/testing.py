"""Fakes for testing code built on GGRO: tiny, random, offline models, tokenizers and decoders.

Everything here is built in-process in well under a second and touches no
network, so your own chain, agent or RAG tests can run a real ``GGRODecoder``
(real entropy triggers, real reward gradients, real events) without loading a
real model — as langchain-core's fake chat models do for LangChain code:

- ``tiny_tokenizer()``: a byte-level BPE tokenizer with a ChatML chat template;
- ``tiny_causal_lm(tok)`` / ``tiny_reward_model(tok)``: small random Llama, Qwen2
  or GPT-2 policies and one-label reward classifiers over it;
- ``tiny_decoder()``: GGRO over those, with settings that trigger every call;
- ``scripted_decoder(script_for)``: a decoder whose policy writes the text you
  choose (tool calls, stop sequences, refusals: known output to test parsers on).

Example:
    >>> from ggro_integrations.testing import scripted_decoder
    >>> decoder = scripted_decoder(lambda prompt: "Hello there.")
    >>> decoder.generate("Hi", strategy="greedy").text
    'Hello there.'

See ``docs/testing.md``.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable
from typing import Any

import torch

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

_WORDS = ["the", "a", "an", "of", "to", "and", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are", "with", "as", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "hot", "word", "but", "what", "some", "we", "can", "out", "other", "were", "all", "there", "when", "up", "use", "your", "how", "said", "each", "she", "which", "do", "their", "time", "if", "will", "way", "about", "many", "then", "them", "write", "would", "like", "so", "these", "her", "long", "make", "thing", "see", "him", "two", "has", "look", "more", "day", "could", "go", "come", "did", "number", "sound", "no", "most", "people", "my", "over", "know", "water", "than", "call", "first", "who", "may", "down", "side", "been", "now", "find", "any", "new", "work", "part", "take", "get", "place", "made", "live", "where", "after", "back", "little", "only", "round", "man", "year", "came", "show", "every", "good", "me", "give", "our", "under", "name", "very", "through", "just", "form", "sentence", "great", "think", "say", "help", "low", "line", "differ", "turn", "cause", "much", "mean", "before", "move", "right", "boy", "old", "too", "same", "tell", "does", "set", "three", "want", "air", "well", "also", "play", "small", "end", "put", "home", "read", "hand", "port", "large", "spell", "add", "even", "land", "here", "must", "big", "high", "such", "follow", "act", "why", "ask", "men", "change", "went", "light", "kind", "off", "need", "house", "picture", "try", "us", "again", "animal", "point", "mother", "world", "near", "build", "self", "earth", "father", "sorry", "cannot", "safe", "please", "thanks", "sure", "hello", "yes", "question", "answer", "python", "knife", "kill", "process", "chemistry"]


def sample_corpus(seed: int, lines: int = 400) -> list[str]:
    """The random sentences ``tiny_tokenizer`` is trained on (``seed`` picks which)."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
        sentence = " ".join(words).capitalize() + rng.choice([".", "?", "!", ",", ":"])
        out.append(sentence)
    return out


def tiny_tokenizer(vocab_size: int = 384, *, seed: int = 0, chat_template: bool = True) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on a small corpus.

    Different ``vocab_size`` or ``seed`` give genuinely different vocabularies.
    EOS is ``<|im_end|>``, PAD is ``<pad>``; with ``chat_template`` it renders ChatML.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sample_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>", bos_token=None, unk_token=None
    )
    if chat_template:
        fast.chat_template = CHATML_TEMPLATE
    return fast


def permuted_tokenizer(tokenizer: Any, a: int = 100, b: int = 101) -> Any:
    """A copy of ``tokenizer`` in which the tokens with ids ``a`` and ``b`` swap ids."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    data = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = data["model"]["vocab"]
    token_a, token_b = tokenizer.convert_ids_to_tokens([a, b])
    vocab[token_a], vocab[token_b] = b, a
    fast = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(data)),
        eos_token=tokenizer.eos_token,
        pad_token=tokenizer.pad_token,
        bos_token=None,
        unk_token=None,
    )
    fast.chat_template = tokenizer.chat_template
    return fast


def _config(arch: str, tokenizer: Any, *, hidden: int, layers: int, context: int = 512, **extra: Any) -> Any:
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    common = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
        # Untied heads let tiny_causal_lm sharpen the output layer without touching the inputs.
        "tie_word_embeddings": False,
        **extra,
    }
    if arch in ("llama", "qwen2"):
        config_class = LlamaConfig if arch == "llama" else Qwen2Config
        return config_class(
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=context,
            **common,
        )
    if arch == "gpt2":
        return GPT2Config(n_embd=hidden, n_layer=layers, n_head=4, n_positions=context, **common)
    raise ValueError(f"arch must be 'llama', 'qwen2' or 'gpt2'; got {arch!r}")


def tiny_causal_lm(
    tokenizer: Any,
    arch: str = "llama",
    *,
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    context: int = 512,
    logit_scale: float = 30.0,
) -> Any:
    """A small random causal LM over ``tokenizer``'s vocabulary, in eval mode.

    ``logit_scale`` sharpens the random output head so next-token entropies vary
    from confident to uncertain, as in a trained model, instead of all sitting
    near ``log(vocab)``.
    """
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(arch, tokenizer, hidden=hidden, layers=layers, context=context))
    with torch.no_grad():
        head = model.get_output_embeddings()
        head.weight.mul_(logit_scale)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def tiny_reward_model(
    tokenizer: Any, arch: str = "llama", *, seed: int = 1, hidden: int = 32, layers: int = 2, context: int = 512
) -> Any:
    """A small random one-label ``...ForSequenceClassification`` over ``tokenizer``."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    config = _config(arch, tokenizer, hidden=hidden, layers=layers, context=context, num_labels=1)
    return AutoModelForSequenceClassification.from_config(config).eval()


# -- decoders ---------------------------------------------------------------------------------

FAST_SETTINGS: dict[str, Any] = {"entropy_threshold": 0.5, "max_new_tokens": 12, "num_refinements": 2, "nudge_top_k": 5}
"""GGRO settings under which the tiny policy triggers a few times per call (each call ~0.1-0.3 s on one core)."""


@functools.cache
def _parts(tools: bool) -> tuple[Any, Any, Any]:
    from .rewards import HFRewardModel

    tokenizer = tiny_tokenizer()
    if tools:
        from .tools import CHATML_TOOLS_TEMPLATE

        tokenizer.chat_template = CHATML_TOOLS_TEMPLATE
    # A 2048-token window (Llama computes rotary positions on the fly): tool prompts spelled in a
    # 384-token vocabulary run to several hundred tokens.
    policy = tiny_causal_lm(tokenizer, context=2048)
    reward = HFRewardModel(tiny_reward_model(tokenizer, seed=1, context=2048), tokenizer, name="tiny-reward")
    return tokenizer, policy, reward


def tiny_decoder(*, tools: bool = True, **config: Any) -> Any:
    """A ``GGRODecoder`` over a tiny random Llama and reward model (shared per process).

    ``tools=True`` gives its tokenizer the package's ChatML tool template, so
    ``bind_tools`` works; ``config`` overrides ``FAST_SETTINGS``.
    """
    from .decoding import GGRODecoder

    tokenizer, policy, reward = _parts(tools)
    return GGRODecoder(policy, tokenizer, reward, **{**FAST_SETTINGS, **config})


def scripted_causal_lm(tokenizer: Any, script_for: Callable[[str], str], *, context: int = 2048, seed: int = 0) -> Any:
    """A tiny Llama that writes ``script_for(prompt_text)`` and then EOS, whatever its weights say.

    Each step's logits get a large bonus on the scripted token, so entropy, the
    top-K and rewards still come from a real model. ``model.prompts`` records
    every prompt it was given.
    """
    from transformers import LlamaForCausalLM

    class ScriptedLlama(LlamaForCausalLM):
        def forward(self, input_ids: Any = None, **kwargs: Any) -> Any:
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            past = cache.get_seq_length() if cache is not None else 0
            out = super().forward(input_ids=input_ids, **kwargs)
            if past == 0:  # the prefill: remember the prompt and choose the script
                prompt = tokenizer.decode(input_ids[0].tolist())
                self.prompts.append(prompt)
                self._prompt_len = input_ids.shape[1]
                ids = tokenizer.encode(script_for(prompt), add_special_tokens=False)
                self._script = ids + [tokenizer.eos_token_id]
            step = past + input_ids.shape[1] - self._prompt_len  # index of the response token to predict
            out.logits[:, -1, self._script[min(step, len(self._script) - 1)]] += 1e4
            return out

    torch.manual_seed(seed)
    model = ScriptedLlama(_config("llama", tokenizer, hidden=32, layers=2, context=context)).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.prompts = []
    return model


def scripted_decoder(script_for: Callable[[str], str], *, tools: bool = True, **config: Any) -> Any:
    """A ``GGRODecoder`` whose policy writes ``script_for(prompt)`` (``.model.prompts`` records the prompts).

    Refinement is off by default (``num_refinements=0``) so the script is what comes out.
    """
    from .decoding import GGRODecoder

    tokenizer, _, reward = _parts(tools)
    model = scripted_causal_lm(tokenizer, script_for)
    return GGRODecoder(model, tokenizer, reward, **{**FAST_SETTINGS, "num_refinements": 0, "max_new_tokens": 64, **config})
