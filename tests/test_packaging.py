"""The built artefacts: the wheel carries the package, its data and LICENSE but no tests; the
sdist is the whole source tree (tests with their conftests, docs, examples, Makefile, LICENSE).

Built offline with this environment's setuptools through the PEP 517 hooks, from a copy of the
source tree (about 10 s)."""

from __future__ import annotations

import email
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".ggro-cache", ".hypothesis"}


def source_files() -> list[str]:
    """The project's files: git's view (tracked plus new, not ignored) in a checkout, else the tree."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout
        return sorted(p for p in out.splitlines() if (ROOT / p).is_file())
    files = []
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        files += [str(pathlib.Path(folder, n).relative_to(ROOT)) for n in names if not n.endswith((".pyc", ".tmp"))]
    return sorted(f for f in files if f != "PKG-INFO" and f != "setup.cfg")  # an sdist's generated files


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    src = tmp_path_factory.mktemp("src")
    files = source_files()
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    names = []
    for hook in ("build_sdist", "build_wheel"):  # one process each: setuptools keeps state between hooks
        code = f"import sys; from setuptools import build_meta; print(build_meta.{hook}(sys.argv[1]))"
        proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        names.append(proc.stdout.split()[-1])
    sdist_name, wheel_name = names
    return {"files": files, "sdist": out / sdist_name, "wheel": out / wheel_name}


def test_wheel_has_the_package_its_data_and_license_but_no_tests(built):
    with zipfile.ZipFile(built["wheel"]) as wheel:
        names = set(wheel.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        metadata = email.message_from_bytes(wheel.read(f"{dist_info}/METADATA"))
    package = {f for f in built["files"] if f.startswith("ggro_integrations/")}
    assert package, "no package files found"
    assert package <= names, f"missing from the wheel: {sorted(package - names)}"  # every module and data file
    assert {"ggro_integrations/py.typed", "ggro_integrations/assets/default_reward_head.safetensors"} <= names
    assert f"{dist_info}/licenses/LICENSE" in names
    outside = {n for n in names if not n.startswith(("ggro_integrations/", dist_info + "/"))}
    assert not outside, f"the wheel should hold the package only: {sorted(outside)}"
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Name"] == "ggro-integrations"
    assert "ggro = ggro_integrations.cli:main" in zipfile.ZipFile(built["wheel"]).read(f"{dist_info}/entry_points.txt").decode()


def test_sdist_is_the_whole_source_tree(built):
    with tarfile.open(built["sdist"]) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if m.isfile() and "/" in m.name}
    missing = set(built["files"]) - members
    assert not missing, f"missing from the sdist: {sorted(missing)}"
    # What the tests from an sdist need (the last round's sdist lacked these).
    assert {"tests/conftest.py", "tests/langchain/conftest.py", "tests/llama_index/conftest.py", "LICENSE", "Makefile"} <= members
    assert not [m for m in members if "__pycache__" in m or m.endswith(".pyc")]
