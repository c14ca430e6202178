"""A loopback HTTP proxy in front of a real server that injects faults on demand.

Every request is forwarded to ``upstream``; a ``/completion`` request can instead be
answered with an HTTP error status, or have its streamed answer cut after a number
of events (the connection dropped, as a crash or a proxy timeout would). Responses
go back as HTTP/1.0 (body until the connection closes), so a cut is a real EOF
mid-stream.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.lock = threading.Lock()
        self.statuses: list[int] = []  # answer the next completion requests with these statuses
        self.cuts: list[int] = []  # cut the next streamed completions after this many events
        self.completions = 0
        self.faults = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer._forward(self, None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                outer._forward(self, self.rfile.read(length) if length else b"")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _fault(self, path: str) -> tuple[int | None, int | None]:
        with self.lock:
            if path != "/completion":
                return None, None
            self.completions += 1
            if self.statuses:
                self.faults += 1
                return self.statuses.pop(0), None
            if self.cuts:
                self.faults += 1
                return None, self.cuts.pop(0)
            return None, None

    def _forward(self, handler: BaseHTTPRequestHandler, body: bytes | None) -> None:
        status, cut = self._fault(handler.path)
        if status is not None:
            payload = json.dumps({"error": {"code": status, "message": f"injected HTTP {status}"}}).encode()
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.end_headers()
            handler.wfile.write(payload)
            return
        method = "POST" if body is not None else "GET"
        with httpx.Client(timeout=300) as client:
            request = client.build_request(method, self.upstream + handler.path, content=body,
                                           headers={"Content-Type": "application/json"} if body else None)
            upstream = client.send(request, stream=True)
            try:
                handler.send_response(upstream.status_code)
                handler.send_header("Content-Type", upstream.headers.get("content-type", "application/json"))
                handler.end_headers()
                events = 0
                for line in upstream.iter_lines():
                    handler.wfile.write(line.encode() + b"\n")
                    handler.wfile.flush()
                    if line.startswith("data:"):
                        events += 1
                        if cut is not None and events >= cut:
                            handler.close_connection = True
                            return  # the connection drops here: no finish, no [DONE]
            finally:
                upstream.close()
