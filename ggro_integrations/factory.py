"""``build_decoder``: a ``GGRODecoder`` from names, with models loaded once and shared.

Every front door (CLI, LangChain, LlamaIndex) builds its decoder here, so a
policy or reward model named in several places is loaded a single time per
process (``load_policy`` and ``load_reward_model`` cache by id, device, dtype).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .config import GGROConfig
from .decoding import GGRODecoder
from .default_model.settings import with_policy_settings
from .errors import ConfigError
from .policies import load_policy
from .rewards.registry import load_reward_model


def build_decoder(
    model: Any = "default",
    reward_model: Any = "default",
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    config: GGROConfig | None = None,
    server: str | None = None,
    engine: str = "llama.cpp",
    server_options: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> GGRODecoder:
    """A decoder for ``model`` (``"default"``, a hub id, a path, or ``(model, tokenizer)``)
    steered by ``reward_model`` (any spec ``load_reward_model`` accepts).

    For ``model="default"`` the measured settings of the embedded default
    (``default_model.DEFAULT_POLICY_SETTINGS``: entropy threshold 2.0, top-K 5)
    apply unless ``config`` or explicit keyword arguments say otherwise.

    With ``server=URL`` the policy runs on a serving engine (``engine``: ``"llama.cpp"``,
    ``"vllm"`` or ``"sglang"``) serving the same model: ``model`` then names only the
    tokenizer, loaded here (the embedded default's for ``"default"``, else a hub id or
    path), and the reward model stays in this process on ``device``.
    ``server_options`` go to ``ServerBackend`` (``top_logprobs``, ``request_tokens``,
    ``api_key``, ``timeout``, ``retry``, ``model`` (the served name), ...).

    Example:
        >>> decoder = build_decoder("default", "default", entropy_threshold=2.5)  # doctest: +SKIP
        >>> decoder = build_decoder("default", server="http://127.0.0.1:8080")  # doctest: +SKIP
    """
    overrides = with_policy_settings(model, config, overrides)
    if server is not None:
        backend = server_backend(model, server, engine=engine, trust_remote_code=trust_remote_code,
                                 config=(config or GGROConfig()).replace(**overrides), **dict(server_options or {}))
        reward = None if reward_model is None else load_reward_model(reward_model, device=device, dtype=dtype)
        return GGRODecoder(backend=backend, reward_model=reward, config=config,
                           load_options={"device": device, "dtype": dtype}, **overrides)
    if server_options:
        raise ConfigError("server_options= configures a server backend: pass server=URL with it.")
    policy, tokenizer = load_policy(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    reward = None if reward_model is None else load_reward_model(reward_model, device=device, dtype=dtype)
    return GGRODecoder(policy, tokenizer, reward, config=config, **overrides)


def server_backend(model: Any, url: str, *, engine: str = "llama.cpp", trust_remote_code: bool = False,
                   config: GGROConfig | None = None, **options: Any) -> Any:
    """A ``ServerBackend`` on ``url`` with ``model``'s tokenizer (and end-of-sequence ids) loaded here.

    ``model`` is ``"default"`` (the embedded default's tokenizer, from its converted checkpoint),
    a hub id or a path (its tokenizer and generation config), or a loaded tokenizer. Unless
    ``top_logprobs`` is given, N is 20 or ``nudge_top_k`` plus the EOS ids, whichever is larger.
    """
    from .backends.server.backend import ServerBackend
    from .decoding.policy import eos_token_ids
    from .models import DEFAULT_POLICY_ID

    if isinstance(model, str) and model == "default":
        policy, tokenizer = load_policy("default")  # the default reward model shares this checkpoint
        eos, name = eos_token_ids(policy, tokenizer), DEFAULT_POLICY_ID
    elif isinstance(model, str):
        from transformers import AutoTokenizer, GenerationConfig

        try:
            tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model={model!r}: cannot load its tokenizer for the server backend ({exc}); "
                              "give the hub id or path of the served model's tokenizer.") from exc
        try:
            ids = GenerationConfig.from_pretrained(model).eos_token_id  # what generate() stops on
        except OSError:  # no generation_config.json: the tokenizer's EOS
            ids = None
        ids = tokenizer.eos_token_id if ids is None else ids
        eos = set() if ids is None else {int(i) for i in ([ids] if isinstance(ids, int) else ids)}
        name = model
    elif hasattr(model, "encode") and hasattr(model, "decode"):
        tokenizer, name = model, getattr(model, "name_or_path", None) or url
        eos = {model.eos_token_id} if model.eos_token_id is not None else set()
    else:
        raise ConfigError(f"with server=, model must be 'default', a hub id, a path or a tokenizer; got "
                          f"{type(model).__name__}.")
    options.setdefault("eos_ids", eos)
    options.setdefault("name", name)
    k = (config or GGROConfig()).nudge_top_k
    options.setdefault("top_logprobs", max(20, k + len(options["eos_ids"])))
    return ServerBackend(url, tokenizer, engine=engine, **options)
