import pytest

pytestmark = pytest.mark.slow


def test_default_policy_comes_with_its_measured_settings():
    from ggro_integrations import GGROConfig, build_decoder
    from ggro_integrations.rewards.default import DEFAULT_POLICY_SETTINGS

    decoder = build_decoder("default", "default")
    assert decoder.config.entropy_threshold == DEFAULT_POLICY_SETTINGS["entropy_threshold"]
    assert decoder.config.nudge_top_k == DEFAULT_POLICY_SETTINGS["nudge_top_k"]
    assert build_decoder("default", "default", entropy_threshold=1.5).config.entropy_threshold == 1.5
    assert build_decoder("default", "default", config=GGROConfig()).config.nudge_top_k == 25
