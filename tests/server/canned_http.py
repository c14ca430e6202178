"""A real HTTP server on loopback that answers from a script: for error paths real engines won't produce on demand.

Each request is handed to ``respond(handler, body) -> Reply`` together with its
count; the reply is sent over a real socket (status, JSON or SSE body), or the
connection is cut part-way to imitate a crash.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict -> JSON; str -> sent as is
    sse: list[Any] | None = None  # each item becomes one "data: ..." event
    cut_after_bytes: int | None = None  # send this many body bytes then drop the connection
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    method: str
    path: str
    body: Any
    headers: dict[str, str]


class CannedServer:
    def __init__(self, respond: Callable[[Seen, int], Reply]) -> None:
        self.respond = respond
        self.requests: list[Seen] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                seen = Seen(self.command, self.path, body, {k.lower(): v for k, v in self.headers.items()})
                outer.requests.append(seen)
                reply = outer.respond(seen, len(outer.requests))
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.sse is not None:
                    payload = "".join(
                        f"data: {item if isinstance(item, str) else json.dumps(item)}\n\n" for item in reply.sse
                    ).encode()
                    content_type = "text/event-stream"
                else:
                    text = reply.body if isinstance(reply.body, str) else json.dumps(reply.body or {})
                    payload = text.encode()
                    content_type = "application/json"
                self.send_response(reply.status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if reply.cut_after_bytes is not None:
                    self.wfile.write(payload[: reply.cut_after_bytes])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(payload)

            do_GET = _handle
            do_POST = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "CannedServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def llama_completion(tokens: list[int], n: int = 2, stop_type: str = "limit") -> dict[str, Any]:
    """A llama-server /completion body for ``tokens`` (top-n candidates: the token, then ids 0..)."""
    probs = []
    for t in tokens:
        top = [{"id": t, "logprob": -0.1}] + [{"id": 10_000 + i, "logprob": -3.0 - i} for i in range(n - 1)]
        probs.append({"id": t, "logprob": -0.1, "top_logprobs": top})
    return {
        "content": "x" * len(tokens),
        "tokens": tokens,
        "stop": True,
        "stop_type": stop_type,
        "tokens_predicted": len(tokens),
        "completion_probabilities": probs,
        "timings": {"cache_n": 3, "prompt_n": 2},
    }
