"""A tiny real proxy instance for tests: serves ``/health`` over HTTP/1.1 with keep-alive.

Run as ``python -m tests.helpers.instance_server [--port N] [--flap]``; it prints its port on the
first line of stdout (``--close``: it closes the connection after each answer, as many servers do).
``POST /control/<status>`` sets the status ``/health`` answers; ``--flap``
alternates 200 and 503 on every request; ``POST /recover`` records the JSON body (the engine's
recovery action), listed by ``GET /recoveries``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _State:
    def __init__(self, flap: bool, close: bool = False) -> None:
        self.close = close
        self.lock = threading.Lock()
        self.status = 200
        self.flap = flap
        self.health_requests = 0
        self.recoveries: list[Any] = []

    def next_health_status(self) -> int:
        with self.lock:
            self.health_requests += 1
            if self.flap:
                return 200 if self.health_requests % 2 else 503
            return self.status


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: tests read only stdout's first line

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.server.state.close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        state = self.server.state
        if self.path.startswith("/health"):
            status = state.next_health_status()
            self._reply(status, {"status": status})
        elif self.path == "/recoveries":
            with state.lock:
                self._reply(200, list(state.recoveries))
        elif self.path == "/stats":
            with state.lock:
                self._reply(200, {"healthRequests": state.health_requests})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/control/"):
            with state.lock:
                state.status = int(self.path.rsplit("/", 1)[1])
            self._reply(200, {"status": state.status})
        elif self.path == "/recover":
            with state.lock:
                state.recoveries.append(json.loads(body or b"null"))
            self._reply(202, {"accepted": True})
        else:
            self._reply(404, {"error": "not found"})


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, port: int, state: _State) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = state


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--flap", action="store_true")
    parser.add_argument("--close", action="store_true")
    args = parser.parse_args()
    server = _Server(args.port, _State(args.flap, args.close))
    sys.stdout.write(f"{server.server_address[1]}\n")
    sys.stdout.flush()
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
