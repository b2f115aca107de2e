"""A stand-in relay for ``proxy-failover demo``: answers ``GET /health`` with 200, nothing else.

Run as a script (``python demo_relay.py --port N``), standard library only, so it starts fast and
can be killed with SIGKILL like a real relay; it prints its port on the first line of stdout.
Port 0 picks a free port; the demo restarts a killed relay on the same port.
"""

from __future__ import annotations

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Health(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return  # the demo narrates; the relay stays quiet

    def do_GET(self) -> None:
        status, body = (200, b"ok\n") if self.path.startswith("/health") else (404, b"")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Health)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
