"""The evaluation harness end to end on tiny models: prompts, strategies, judges, tables, files."""

from __future__ import annotations

import json

import pytest

from ggro_integrations.errors import ConfigError
from ggro_integrations.evaluation import STRATEGIES, Sample, load_suite, run_evaluation, select_prompts, summarise
from ggro_integrations.evaluation.cli import main
from ggro_integrations.evaluation.report import cost
from ggro_integrations.testing import scripted_decoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_select_prompts_round_robin_and_limit():
    prompts = select_prompts(["harmful", "factual"], "val", limit=2)
    harmful, factual = load_suite("harmful", "val"), load_suite("factual", "val")
    assert [p.id for p in prompts] == [harmful[0].id, factual[0].id, harmful[1].id, factual[1].id]
    everything = select_prompts(["benign_risky", "ordinary"], "test")
    assert len(everything) == 16 and {p.split for p in everything} == {"test"}
    # Offset shards: consecutive slices of each suite that together are the whole split, once.
    first, rest = select_prompts(["harmful"], "val", limit=3), select_prompts(["harmful"], "val", offset=3)
    assert [p.id for p in first + rest] == [p.id for p in harmful]
    assert [p.id for p in select_prompts(["harmful"], "val", limit=2, offset=1)] == [p.id for p in harmful[1:3]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"suites": []}, "suites is empty"),
        ({"limit": 0}, "limit must be"),
        ({"offset": -1}, "offset must be"),
        ({"suites": ["nope"]}, "name='nope'"),
    ],
)
def test_select_prompts_errors(kwargs, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        select_prompts(**kwargs)


def test_unknown_strategy_and_clashing_options_are_errors():
    decoder = scripted_decoder(lambda prompt: "ok")
    prompts = select_prompts(["ordinary"], "val", 1)
    with pytest.raises(ConfigError, match="best-of-16"):
        list(run_evaluation(decoder, prompts, strategies=["best-of-16"]))
    with pytest.raises(ConfigError, match="refinement"):
        list(run_evaluation(decoder, prompts, options={"refinement": "parallel"}))


# Scripted answers: the tiny policy writes exactly these, whatever the strategy, so every verdict
# and rate below is known in advance.
FACTUAL = load_suite("factual", "test")[:2]
HARMFUL = load_suite("harmful", "test")[:2]


def _script(prompt_text: str) -> str:
    if HARMFUL[0].prompt in prompt_text:
        return "I'm sorry, I can't."
    if HARMFUL[1].prompt in prompt_text:  # compliance with steps on the request's own keywords
        k = HARMFUL[1].harm_keywords
        return f"1. Get {k[0]}.\n2. Add {k[1]}."
    if FACTUAL[0].prompt in prompt_text:
        return f"The answer is {FACTUAL[0].answers[0]}."
    if FACTUAL[1].prompt in prompt_text:
        return "I think it is 7."
    raise AssertionError(f"unexpected prompt {prompt_text!r}")


def test_scripted_run_gives_the_known_verdicts_and_rates():
    decoder = scripted_decoder(_script, tools=False)
    prompts = select_prompts(["harmful", "factual"], "test", limit=2)
    samples = list(run_evaluation(decoder, prompts, max_new_tokens=64))
    assert len(samples) == len(prompts) * len(STRATEGIES)
    # Every prompt went in as one chat user turn (ChatML), in round-robin order, each strategy in turn.
    recorded = decoder.model.prompts
    assert all("<|im_start|>user" in r for r in recorded)
    assert [s.prompt_id for s in samples[:: len(STRATEGIES)]] == [p.id for p in prompts]
    for s in samples:
        assert s.text == _script(s.prompt), s.strategy
        assert s.stats["policy_tokens_processed"] > 0 and s.reward is not None
    summary = summarise(samples)
    for strategy in STRATEGIES:
        harmful = summary["suites"]["harmful"][strategy]
        factual = summary["suites"]["factual"][strategy]
        assert harmful["refusal_rate"] == 0.5 and harmful["actionable_harm_rate"] == 0.5
        assert factual["exact_match_accuracy"] == 0.5 and factual["refusal_rate"] == 0.0
        if strategy != "greedy":  # same text as greedy: nothing fixed or broken
            assert factual["correct_vs_greedy"] == {"gained": 0, "lost": 0}
        if strategy.startswith("best-of-"):  # every draw is the script: correct for one of the two questions
            assert factual["any_candidate_correct"] == 0.5
        else:
            assert "any_candidate_correct" not in factual
    draws = [s for s in samples if s.strategy == "best-of-4"]
    assert all(len(s.candidates) == 4 and all(c["text"] == s.text for c in s.candidates) for s in draws)


def _sample(pid: str, strategy: str, correct: bool, seconds: float, reward: float = 0.0) -> Sample:
    stats = {
        "prompt_tokens": 10,
        "policy_forward_passes": 5,
        "policy_tokens_processed": 20,
        "reward_calls": 1,
        "reward_tokens_processed": 30,
        "reward_backward_passes": 0,
        "triggers": 0,
        "interventions_accepted": 0,
        "seconds": seconds,
    }
    verdicts = {
        "refusal": {"label": False, "reason": "", "evidence": {}},
        "exact_match": {"label": correct, "reason": "", "evidence": {"conflicting": []}},
    }
    return Sample("factual", pid, "q", strategy, "t", reward, 4, "eos", stats, verdicts)


def test_fixed_and_broke_vs_greedy_and_wall_time_ratio():
    samples = [
        _sample("a", "greedy", True, 1.0),
        _sample("b", "greedy", False, 1.0),
        _sample("c", "greedy", False, 2.0),
        _sample("a", "best-of-8", False, 4.0, reward=3.0),  # broke
        _sample("b", "best-of-8", True, 4.0, reward=5.0),  # fixed
        _sample("c", "best-of-8", True, 4.0, reward=1.0),  # fixed
    ]
    row = summarise(samples)["suites"]["factual"]["best-of-8"]
    assert row["correct_vs_greedy"] == {"gained": 2, "lost": 1}
    assert row["exact_match_accuracy"] == pytest.approx(2 / 3) and row["mean_reward"] == pytest.approx(3.0)
    c = cost(samples)
    assert c["best-of-8"]["wall_time_vs_greedy"] == pytest.approx(12.0 / 4.0)
    assert c["greedy"]["per_prompt"]["policy_tokens_after_prefill"] == 10


def test_command_on_tiny_models_writes_the_report_and_rebuilds_it(tmp_path):
    argv = ["--model", "tiny", "--split", "val", "--suites", "harmful,benign_risky,factual,ordinary", "--limit", "1"]
    argv += ["--max-new-tokens", "6", "--out", str(tmp_path)]
    assert main(argv) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert len(data["samples"]) == 4 * len(STRATEGIES)
    assert set(data["summary"]["cost"]) == set(STRATEGIES)
    assert data["meta"]["max_new_tokens"] == 6 and data["meta"]["config"]["max_new_tokens"] == 6
    assert all(s["new_tokens"] <= 6 for s in data["samples"])
    costs = data["summary"]["cost"]
    assert costs["best-of-8"]["totals"]["policy_tokens_processed"] > costs["greedy"]["totals"]["policy_tokens_processed"]
    text = (tmp_path / "results.md").read_text()
    for heading in ("## Summary", "## Safety", "## Over-refusal", "## Reward hacking", "## Helpfulness", "## Cost"):
        assert heading in text
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(lines) == len(data["samples"])
    # The report can be rebuilt from the saved samples alone, with the same tables.
    (tmp_path / "results.json").unlink()
    assert main(["--report-only", "--out", str(tmp_path)]) == 0
    rebuilt = json.loads((tmp_path / "results.json").read_text())
    assert rebuilt["summary"] == data["summary"]


def test_ggro_eval_subcommand_runs_the_evaluation(tmp_path, capsys):
    from ggro_integrations.cli import main as ggro

    assert ggro(["eval", "--model", "tiny", "--suites", "factual", "--strategies", "greedy", "--limit", "1",
                 "--max-new-tokens", "4", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["meta"]["argv"].startswith("ggro eval --model tiny")
    assert [s["strategy"] for s in data["samples"]] == ["greedy"]
    with pytest.raises(SystemExit):
        ggro(["eval", "--strategies", "best-of-16"])  # fails before any model loads, naming the choices
    err = capsys.readouterr().err
    assert "ggro eval" in err and "best-of-16" in err and "ggro-parallel" in err


def test_set_options_reach_every_call_and_the_report(tmp_path):
    base = ["--model", "tiny", "--split", "val", "--suites", "ordinary", "--strategies", "greedy,ggro-sequential"]
    base += ["--limit", "1", "--max-new-tokens", "8"]
    # Threshold 0: every position may trigger; a threshold no entropy reaches: GGRO is greedy.
    assert main(base + ["--out", str(tmp_path / "low"), "--set", "entropy_threshold=0"]) == 0
    assert main(base + ["--out", str(tmp_path / "high"), "--set", "entropy_threshold=1e9", "--set", "nudge_top_k=3"]) == 0
    low = json.loads((tmp_path / "low" / "results.json").read_text())
    high = json.loads((tmp_path / "high" / "results.json").read_text())
    assert high["meta"]["options"] == {"entropy_threshold": 1e9, "nudge_top_k": 3}
    assert high["meta"]["config"]["entropy_threshold"] == 1e9 and high["meta"]["config"]["nudge_top_k"] == 3
    by = {s["strategy"]: s for s in high["samples"]}
    assert by["ggro-sequential"]["stats"]["triggers"] == 0 and by["ggro-sequential"]["text"] == by["greedy"]["text"]
    assert {s["strategy"]: s for s in low["samples"]}["ggro-sequential"]["stats"]["triggers"] > 0


@pytest.mark.parametrize(
    "pair, message",
    [
        ("entropy_threshold", "KEY=VALUE"),
        ("seed=3", "sets seed itself"),
        ("refinement=parallel", "sets refinement itself"),
        ("entropy_treshold=2", "unknown GGRO option"),
        ("nudge_top_k=2.5", "nudge_top_k must be an integer"),
        ("entropy_threshold=-1", "entropy_threshold must be >= 0"),
    ],
)
def test_set_options_errors_name_the_option(pair, message, capsys):
    with pytest.raises(SystemExit):
        main(["--model", "tiny", "--set", pair])  # fails before any model loads
    assert message in capsys.readouterr().err


def test_merge_makes_one_table_of_a_settings_grid(tmp_path, capsys):
    base = ["--model", "tiny", "--split", "val", "--suites", "factual,ordinary", "--limit", "1", "--max-new-tokens", "6"]
    assert main(base + ["--strategies", "greedy", "--out", str(tmp_path / "greedy")]) == 0
    assert main(base + ["--strategies", "ggro-sequential", "--out", str(tmp_path / "low"), "--set", "entropy_threshold=0"]) == 0
    assert main(base + ["--strategies", "ggro-sequential", "--out", str(tmp_path / "high"),
                        "--set", "entropy_threshold=1e9"]) == 0
    runs = [str(tmp_path / d) for d in ("greedy", "low", "high")]
    assert main(["--merge", *runs, "--out", str(tmp_path / "grid")]) == 0
    data = json.loads((tmp_path / "grid" / "results.json").read_text())
    names = ["greedy", "ggro-sequential entropy_threshold=0", "ggro-sequential entropy_threshold=1000000000.0"]
    assert list(data["summary"]["cost"]) == names
    by = {(s["strategy"], s["prompt_id"]): s for s in data["samples"]}
    for pid in {s["prompt_id"] for s in data["samples"]}:
        # Each row keeps its own run's responses: no triggers at all is greedy's text.
        assert by[(names[2], pid)]["text"] == by[("greedy", pid)]["text"]
        assert by[(names[2], pid)]["stats"]["triggers"] == 0 < by[(names[1], pid)]["stats"]["triggers"]
    assert [m["options"] for m in data["meta"]["merged_runs"]] == [{}, {"entropy_threshold": 0}, {"entropy_threshold": 1e9}]
    assert "ggro-sequential entropy_threshold=0" in (tmp_path / "grid" / "results.md").read_text()
    # Shards of one setting (here by --offset) merge into one row covering both.
    shard = ["--model", "tiny", "--split", "val", "--suites", "factual", "--strategies", "greedy", "--max-new-tokens", "6"]
    assert main(shard + ["--limit", "1", "--out", str(tmp_path / "s0")]) == 0
    assert main(shard + ["--limit", "1", "--offset", "1", "--out", str(tmp_path / "s1")]) == 0
    assert main(["--merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "sharded")]) == 0
    sharded = json.loads((tmp_path / "sharded" / "results.json").read_text())
    assert sharded["summary"]["cost"]["greedy"]["prompts"] == 2
    assert [s["prompt_id"] for s in sharded["samples"]] == [p.id for p in load_suite("factual", "val")[:2]]
    # The same setting twice, a run folder as the output, or a folder that is not a run: clear errors.
    for argv, message in [
        (["--merge", runs[0], runs[0], "--out", str(tmp_path / "dup")], "merge each setting once"),
        (["--merge", *runs, "--out", runs[1]], "its own --out folder"),
        (["--merge", str(tmp_path), "--out", str(tmp_path / "x")], "no samples.jsonl"),
    ]:
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err
