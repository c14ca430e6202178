import json

import pytest

from ggro_integrations import ConfigError, GGROConfig
from ggro_integrations.config import config_field_names


def test_defaults_follow_the_paper():
    cfg = GGROConfig()
    assert (cfg.num_refinements, cfg.nudge_top_k, cfg.nudge_temperature, cfg.min_segment_tokens) == (8, 25, 0.1, 4)
    assert cfg.nudge_selection == "greedy" and cfg.refinement == "sequential" and cfg.temperature == 0


@pytest.mark.parametrize(
    "field, value",
    [
        ("entropy_threshold", -0.1),
        ("entropy_threshold", float("nan")),
        ("entropy_threshold", "high"),
        ("num_refinements", -1),
        ("num_refinements", 2.5),
        ("nudge_top_k", 0),
        ("nudge_temperature", 0),
        ("nudge_selection", "best"),
        ("nudge_scoring", "approx"),
        ("min_segment_tokens", 0),
        ("max_new_tokens", 0),
        ("temperature", -1),
        ("top_p", 0),
        ("top_p", 1.5),
        ("seed", -3),
        ("stop", [""]),
        ("refinement", "batched"),
        ("best_of_n", 0),
        ("use_chat_template", "yes"),
    ],
)
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        GGROConfig(**{field: value})


def test_replace_validates_and_rejects_unknown_names():
    cfg = GGROConfig()
    assert cfg.replace(max_new_tokens=7).max_new_tokens == 7
    assert cfg.replace(max_new_tokens=None) is cfg
    with pytest.raises(ConfigError, match="entropy_treshold.*valid options"):
        cfg.replace(entropy_treshold=2.0)
    with pytest.raises(ConfigError, match="top_p"):
        cfg.replace(top_p=2)


def test_stop_accepts_a_single_string_and_to_dict_is_json():
    cfg = GGROConfig(stop="\n\n")
    assert cfg.stop == ("\n\n",)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert set(data) == set(config_field_names())
    assert GGROConfig(**{**data, "stop": tuple(data["stop"])}) == cfg
