"""Run llama.cpp's HTTP server from the prebuilt ``xllamacpp`` wheel, with ``llama-server``'s flags.

``xllamacpp`` compiles llama.cpp's server code (``tools/server``) into a Python
extension; ``xllamacpp.Server(params)`` listens on ``params.hostnames`` /
``params.port`` in background threads. This module is the process around it, so
tests and users can start it exactly like a ``llama-server`` binary::

    python -m ggro_integrations.backends.server.xllamacpp_server -m model.gguf --port 8080 -np 4 -t 2 -c 4096

Only the flags below are understood; anything else is an error rather than
silently ignored.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Sequence


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="xllamacpp_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", required=True, help="GGUF model file")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("-np", "--parallel", type=int, default=1, help="parallel sequences (slots)")
    parser.add_argument("-t", "--threads", type=int, default=max(1, (os.cpu_count() or 2)))
    parser.add_argument("-tb", "--threads-batch", type=int, default=None)
    parser.add_argument("-c", "--ctx-size", type=int, default=4096, help="context size shared by all slots")
    parser.add_argument("--no-cache-prompt", action="store_true", help="turn the prompt cache off")
    parser.add_argument("--api-key-file", help="file whose first line is the key clients must send")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import xllamacpp
    except ImportError:
        print("xllamacpp is not installed: pip install 'ggro-integrations[llama-cpp]'", file=sys.stderr)
        return 2
    if not os.path.isfile(args.model):
        print(f"--model {args.model!r} is not a file", file=sys.stderr)
        return 2
    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.n_ctx = args.ctx_size
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads_batch or args.threads
    params.hostnames = [args.host]
    params.port = args.port
    params.cache_prompt = not args.no_cache_prompt
    if args.api_key_file:
        with open(args.api_key_file, encoding="utf-8") as fh:
            params.api_keys = [fh.readline().strip()]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = xllamacpp.Server(params)
    print(f"listening on {server.listening_address}", flush=True)
    stop.wait()
    # Leave without tearing the extension's threads down one by one: the process
    # ends, and with it every connection (what a killed llama-server does too).
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
