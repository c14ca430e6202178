"""The embedded default reward: a linear head over the default policy's own features.

SmolLM2-135M-Instruct's final hidden state, read at one position of the
formatted conversation, goes through a trained ``hidden_size -> 1`` linear
layer (``assets/default_reward_head.safetensors``, trained by
``training/train_default_reward.py``). The classifier is a *view*: it borrows
the policy's backbone module instead of loading a second copy of the weights,
so the reward shares the policy's vocabulary and gradient path exactly.

Where the head reads: SmolLM2's pad token is its EOS ``<|im_end|>`` and its
template ends every turn with ``<|im_end|>\\n``. The view keeps
``pad_token_id = <|im_end|>``, which is what transformers'
``LlamaForSequenceClassification`` would do with this config, so the head
reads the hidden state of that trailing newline: the first position that has
seen the whole closed turn. Training extracted its features through this same
``HFRewardModel`` session, so training and scoring cannot drift apart.
"""

from __future__ import annotations

import copy
import json
import weakref
from importlib import resources
from typing import Any

import torch
from safetensors.torch import load

from ..errors import RewardModelError
from ..rewards.hf import HFRewardModel

DEFAULT_REWARD_NAME = "smollm2-135m-safety-helpfulness"
"""Registry name of the embedded default reward (also registered as ``"default"``)."""

HEAD_FILE = "default_reward_head.safetensors"
METADATA_FILE = "default_reward_head.json"

# One reward view per policy object: asking again for the same policy returns the same reward.
_views: weakref.WeakKeyDictionary[Any, HFRewardModel] = weakref.WeakKeyDictionary()


class PolicyFeatureClassifier(torch.nn.Module):
    """A one-label sequence classifier over a causal LM's backbone, without copying it.

    Exposes what ``HFRewardModel`` reads from a ``...ForSequenceClassification``:
    ``config`` (``num_labels=1``, ``pad_token_id``), ``base_model_prefix``, the
    backbone under that name, ``score`` and ``get_input_embeddings``.
    """

    def __init__(self, causal_lm: Any, score: torch.nn.Linear, *, pad_token_id: int | None) -> None:
        super().__init__()
        prefix = getattr(causal_lm, "base_model_prefix", "") or "model"
        backbone = getattr(causal_lm, prefix, None)
        if not isinstance(backbone, torch.nn.Module):
            raise RewardModelError(
                f"{type(causal_lm).__name__} has no backbone module {prefix!r}; the default reward head "
                "needs a decoder-only causal LM such as SmolLM2."
            )
        self.base_model_prefix = prefix
        # Registered as a submodule, so .to()/.eval() reach it, but it is the policy's own object.
        setattr(self, prefix, backbone)
        self.score = score
        config = copy.deepcopy(causal_lm.config)
        config.num_labels = 1
        config.pad_token_id = pad_token_id
        self.config = config

    def get_input_embeddings(self) -> torch.nn.Module:
        return getattr(self, self.base_model_prefix).get_input_embeddings()


def head_path() -> Any:
    """Location of the shipped head (a ``Traversable`` inside the package)."""
    return resources.files("ggro_integrations") / "assets" / HEAD_FILE


def head_metadata() -> dict[str, Any]:
    """The training metadata shipped next to the head (accuracy, margins, command)."""
    path = resources.files("ggro_integrations") / "assets" / METADATA_FILE
    return json.loads(path.read_text(encoding="utf-8"))


def load_head(hidden_size: int, *, device: Any = None, dtype: torch.dtype | None = None) -> torch.nn.Linear:
    """The trained ``hidden_size -> 1`` linear layer (standardisation already folded in)."""
    path = head_path()
    try:
        tensors = load(path.read_bytes())
    except FileNotFoundError as exc:
        raise RewardModelError(
            f"the default reward head {HEAD_FILE} is missing from the installed package; reinstall "
            "ggro-integrations, or retrain it with `python training/train_default_reward.py`."
        ) from exc
    weight, bias = tensors["weight"], tensors["bias"]
    if tuple(weight.shape) != (1, hidden_size):
        raise RewardModelError(
            f"the default reward head expects {weight.shape[-1]} features but the policy's hidden size is "
            f"{hidden_size}; it only fits the default policy (SmolLM2-135M-Instruct)."
        )
    head = torch.nn.Linear(hidden_size, 1)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return head.to(device=device, dtype=dtype)


def reward_view(
    model: Any, tokenizer: Any, head: torch.nn.Module, *, name: str = DEFAULT_REWARD_NAME
) -> HFRewardModel:
    """An ``HFRewardModel`` reading ``model``'s own features through ``head`` (used by training too)."""
    classifier = PolicyFeatureClassifier(model, head, pad_token_id=tokenizer.pad_token_id)
    return HFRewardModel(classifier, tokenizer, name=name)


def load_default_reward_model(
    device: str | torch.device | None = None, dtype: torch.dtype | str | None = None, **_: Any
) -> HFRewardModel:
    """The embedded default reward over the (cached) default policy's backbone.

    Example:
        >>> reward = load_default_reward_model()                     # doctest: +SKIP
        >>> reward.score_texts("How do I hotwire a car?", ["I can't help with that."], reward.tokenizer)  # doctest: +SKIP
    """
    # Imported here, not at the top: the policy loader imports this package (the embedded default
    # is one of the specs it resolves), and the head needs the loaded policy only now.
    from ..policies import load_policy

    model, tokenizer = load_policy("default", device=device, dtype=dtype)
    cached = _views.get(model)
    if cached is not None:
        return cached
    param = next(model.parameters())
    head = load_head(model.config.hidden_size, device=param.device, dtype=param.dtype)
    reward = reward_view(model, tokenizer, head)
    _views[model] = reward
    return reward
