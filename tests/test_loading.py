"""Loader options read one way by every loader; the models/rewards modules' public paths and shape."""

from __future__ import annotations

import ast
import pathlib
import threading
import time

import pytest
import torch

from ggro_integrations import ConfigError, build_decoder
from ggro_integrations.loading import device_name, parse_dtype, progress_bars, resolve_source
from ggro_integrations.rewards import HFRewardModel, load_reward_model, register_reward_model, unregister_reward_model
from ggro_integrations.testing import tiny_causal_lm, tiny_reward_model

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "ggro_integrations"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    "spelling, expected",
    [
        ("bf16", torch.bfloat16), ("bfloat16", torch.bfloat16), ("torch.bfloat16", torch.bfloat16),
        (torch.bfloat16, torch.bfloat16), ("fp16", torch.float16), ("half", torch.float16),
        ("float32", torch.float32), ("FP32", torch.float32), ("float64", torch.float64), ("auto", "auto"), (None, None),
    ],
)
def test_one_dtype_parser(spelling, expected):
    assert parse_dtype(spelling) == expected


@pytest.mark.parametrize("bad", ["int3", "int8", torch.int64, "bfloat", 16])
def test_bad_dtypes_name_the_parameter(bad):
    with pytest.raises(ConfigError, match="dtype .* is not a floating-point torch dtype"):
        parse_dtype(bad)


def test_device_names_are_canonical():
    assert device_name("cpu") == device_name(torch.device("cpu")) == "cpu"
    assert device_name(None) is None
    with pytest.raises(ConfigError, match="device 'gpu' is not a torch device"):
        device_name("gpu")


def test_path_or_hub_id(tmp_path):
    assert resolve_source(str(tmp_path)).kind == "local"
    for path in ("./x", "/no/such", "~/no/such", "a/b/c", "a\\b"):
        assert resolve_source(path).kind == "missing", path
    assert resolve_source("org/name").kind == "hub"
    assert resolve_source("gpt2").kind == "name"


def test_build_decoder_reads_dtype_the_same_way_for_both_models(tmp_path, tokenizer):
    # The bug: build_decoder(dtype="bf16") loaded the policy, then failed on the reward model.
    tiny_causal_lm(tokenizer).save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    tiny_reward_model(tokenizer).save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    decoder = build_decoder(str(tmp_path / "policy"), str(tmp_path / "rm"), dtype="bf16", max_new_tokens=2)
    assert decoder.model.dtype == torch.bfloat16
    assert decoder.reward_model.model.dtype == torch.bfloat16


def test_progress_toggle_restores_the_previous_state():
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()
    with progress_bars(False):
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()
    with progress_bars(True):
        assert hf_logging.is_progress_bar_enabled()


def test_old_import_paths_keep_working():
    from ggro_integrations import PolicyLoadError as top_level
    from ggro_integrations.errors import PolicyLoadError
    from ggro_integrations.models import (  # noqa: F401
        DEFAULT_POLICY_ID,
        PolicyLoadError as from_models,
        PolicySpec,
        SMOLLM2_CHAT_TEMPLATE,
        clear_policy_cache,
        convert_gguf_policy,
        default_policy_dir,
        ggro_home,
        load_policy,
        policy_load_count,
    )
    from ggro_integrations.rewards.default import (  # noqa: F401
        DEFAULT_ENTROPY_THRESHOLD,
        DEFAULT_POLICY_SETTINGS,
        DEFAULT_REWARD_NAME,
        HEAD_FILE,
        METADATA_FILE,
        PolicyFeatureClassifier,
        head_metadata,
        head_path,
        load_default_reward_model,
        load_head,
        reward_view,
    )

    assert top_level is PolicyLoadError is from_models
    assert issubclass(PolicyLoadError, RuntimeError)


def test_policy_display_name(policy, tmp_path, tokenizer):
    from ggro_integrations.models import DEFAULT_POLICY_ID, default_policy_dir, policy_display_name

    assert policy_display_name(policy) == "LlamaForCausalLM"
    policy.save_pretrained(tmp_path / "p")
    tokenizer.save_pretrained(tmp_path / "p")
    from ggro_integrations.models import load_policy

    assert policy_display_name(load_policy(str(tmp_path / "p"))[0]) == str(tmp_path / "p")

    class Fake:
        class config:
            _name_or_path = str(default_policy_dir())

    assert policy_display_name(Fake()) == DEFAULT_POLICY_ID


def test_default_settings_are_applied_in_one_place():
    # Everything else reads DEFAULT_POLICY_SETTINGS; only with_policy_settings merges it into a config.
    merging = sorted(
        path.name
        for path in PACKAGE.rglob("*.py")
        if "**DEFAULT_POLICY_SETTINGS" in path.read_text() or "DEFAULT_POLICY_SETTINGS.items()" in path.read_text()
    )
    assert merging == ["settings.py"]
    from ggro_integrations.default_model import DEFAULT_POLICY_SETTINGS, with_policy_settings

    assert with_policy_settings("default", None, {"nudge_top_k": 9}) == {**DEFAULT_POLICY_SETTINGS, "nudge_top_k": 9}
    assert with_policy_settings("default", None, {"entropy_threshold": None})["entropy_threshold"] == 2.0
    assert with_policy_settings("other/model", None, {}) == {}
    assert with_policy_settings("default", object(), {}) == {}  # an explicit config is the caller's choice


# -- rewards/: no cycles hidden in function bodies -----------------------------------------------------


def _function_level_imports(path: pathlib.Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom):
                    found.append(f"{node.name}: from {'.' * inner.level}{inner.module}")
    return found


def test_rewards_package_has_no_function_level_imports():
    found = {p.name: _function_level_imports(p) for p in (PACKAGE / "rewards").glob("*.py")}
    found = {name: imports for name, imports in found.items() if imports}
    # The one kind allowed: the registry reaching the embedded default (a separate, heavier package).
    assert all(i.split(": ")[1].startswith("from ..default_model") for i in found.pop("registry.py", [])), found
    assert found == {}


def test_composites_take_reward_models_not_names(tokenizer, reward_hf_model):
    from ggro_integrations import RewardModelError
    from ggro_integrations.rewards import CompositeReward

    with pytest.raises(RewardModelError, match=r"load_reward_model\(\{'safety': weight"):
        CompositeReward([("safety", 1.0)])
    reward = HFRewardModel(reward_hf_model, tokenizer, name="r")
    assert CompositeReward([(reward, 1.0)]).models == [reward]


def test_a_cache_hit_does_not_wait_for_another_models_load(tokenizer, reward_hf_model):
    ready = HFRewardModel(reward_hf_model, tokenizer, name="ready")
    release, started = threading.Event(), threading.Event()

    def slow(**kwargs):
        started.set()
        release.wait(10)
        return HFRewardModel(reward_hf_model, tokenizer, name="slow")

    register_reward_model("loading-test-ready", lambda **kw: ready, overwrite=True)
    register_reward_model("loading-test-slow", slow, overwrite=True)
    try:
        load_reward_model("loading-test-ready")
        loader = threading.Thread(target=load_reward_model, args=("loading-test-slow",))
        loader.start()
        assert started.wait(5)
        t = time.perf_counter()
        assert load_reward_model("loading-test-ready") is ready
        waited = time.perf_counter() - t
        release.set()
        loader.join(10)
        assert waited < 1.0, f"a cache hit waited {waited:.1f} s for another model's load"
    finally:
        release.set()
        unregister_reward_model("loading-test-ready")
        unregister_reward_model("loading-test-slow")
