"""With no refinements, GGRO must decode exactly what transformers' greedy generate does."""

import pytest
import torch

from ggro_integrations import GGRODecoder
from ggro_integrations.rewards import HFRewardModel
from ggro_integrations.testing import tiny_causal_lm, tiny_reward_model

PROMPTS = ["Hello how are you", "Write a word about the water and the light", "Why?"]


def hf_greedy(model, tokenizer, prompt, max_new_tokens):
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, ids.shape[1] :].tolist()
    return new[: new.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in new else new


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_zero_refinements_equals_hf_generate(tokenizer, arch):
    model = tiny_causal_lm(tokenizer, arch, seed=3)
    reward = HFRewardModel(tiny_reward_model(tokenizer, arch), tokenizer)
    decoder = GGRODecoder(model, tokenizer, reward, num_refinements=0, max_new_tokens=40, entropy_threshold=1.0)
    triggered = 0
    for prompt in PROMPTS:
        expected = hf_greedy(model, tokenizer, prompt, 40)
        result = decoder.generate(prompt)
        assert result.token_ids == expected
        assert result.text == tokenizer.decode(expected, skip_special_tokens=True)
        assert decoder.generate(prompt, strategy="greedy").token_ids == expected
        triggered += len(result.interventions)
        assert not any(e.accepted for e in result.interventions)
    assert triggered > 0, "the test must exercise triggers, or it proves nothing about them"


def test_eos_ends_the_response(tokenizer):
    model = tiny_causal_lm(tokenizer, "llama", seed=5)
    free = hf_greedy(model, tokenizer, "Hello", 30)
    with torch.no_grad():
        # EOS now scores 3x the logit of the token greedy picks third: it wins there (or earlier).
        model.lm_head.weight[tokenizer.eos_token_id] = 3 * model.lm_head.weight[free[2]]
    expected = hf_greedy(model, tokenizer, "Hello", 30)
    assert len(expected) <= 2
    result = GGRODecoder(model, tokenizer, None, max_new_tokens=30).generate("Hello", strategy="greedy")
    assert result.token_ids == expected
    assert result.finish_reason == "eos"


def test_token_budget(tokenizer, policy):
    result = GGRODecoder(policy, tokenizer, None).generate("Hello", strategy="greedy", max_new_tokens=5)
    assert len(result.token_ids) == 5 and result.finish_reason == "length"
