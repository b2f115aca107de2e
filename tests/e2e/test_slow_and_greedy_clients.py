"""The real ``serve`` against raw sockets: bounded heads, read deadlines, enveloped refusals.

Before: a 140 MB header line was answered 200 (and cost 210 MB), idle, slow-header and slow-body
connections were held open for ever, and ``FOO /proxies`` got uvicorn's plain-text 400.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.serve import ServeProcess, start_serve, stop_serve

HEAD_TIMEOUT = 0.5
BODY_TIMEOUT = 0.5
KEEP_ALIVE = 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    folder: Path = tmp_path_factory.mktemp("guard")
    env = {
        "PFO_HTTP_HEAD_TIMEOUT_SECONDS": str(HEAD_TIMEOUT),
        "PFO_HTTP_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        "PFO_HTTP_MAX_HEAD_BYTES": "16384",
        "PFO_HTTP_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE),
        "PFO_ENGINE_ENABLED": "false",
    }
    process = start_serve(f"sqlite+aiosqlite:///{folder / 'pfo.db'}", folder / "serve.log", env)
    try:
        yield process
    finally:
        stop_serve(process)


def _connect(server: ServeProcess) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _read_until_closed(sock: socket.socket, within: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (fails after ``within``)."""
    sock.settimeout(within)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _envelope(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    error = json.loads(body)["error"]
    assert error["statusCode"] == status
    return status, error


def _send_all_until_refused(sock: socket.socket, data: bytes) -> None:
    try:
        for start in range(0, len(data), 65536):
            sock.sendall(data[start : start + 65536])
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server refused the head and hung up before we finished: that is the point


def test_an_unknown_method_or_garbage_is_answered_in_the_error_envelope(
    server: ServeProcess,
) -> None:
    with _connect(server) as sock:
        sock.sendall(b"FOO /proxies HTTP/1.1\r\nHost: x\r\n\r\n")
        status, error = _envelope(_read_until_closed(sock))
    assert (status, error["code"]) == (405, "PROXY_FAILOVER_021")
    with _connect(server) as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n")
        status, error = _envelope(_read_until_closed(sock))
    assert (status, error["code"]) == (400, "PROXY_FAILOVER_001")  # TLS sent to the plain port
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
        status, error = _envelope(_read_until_closed(sock))
    assert (status, error["code"]) == (400, "PROXY_FAILOVER_001")


@pytest.mark.parametrize("size", [20 * 1024, 8 * 1024 * 1024])
def test_a_request_head_over_the_limit_is_431_without_reading_it_all(
    server: ServeProcess, size: int
) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
    with _connect(server) as sock:
        _send_all_until_refused(sock, head)
        status, error = _envelope(_read_until_closed(sock))
    assert (status, error["code"]) == (431, "PROXY_FAILOVER_001")
    assert "16384" in str(error["message"])


def test_many_small_headers_over_the_limit_in_one_packet_are_431(server: ServeProcess) -> None:
    headers = b"".join(b"X-H%d: %s\r\n" % (n, b"v" * 100) for n in range(200))
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        status, _ = _envelope(_read_until_closed(sock))
    assert status == 431


def test_idle_slow_header_and_slow_body_connections_are_closed_by_the_deadlines(
    server: ServeProcess,
) -> None:
    started = time.monotonic()
    with _connect(server) as idle:
        assert _read_until_closed(idle) == b""  # nothing sent: closed silently
    with _connect(server) as slow_head:
        slow_head.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        status, error = _envelope(_read_until_closed(slow_head))
    assert (status, error["code"]) == (408, "PROXY_FAILOVER_001")
    with _connect(server) as slow_body:
        slow_body.sendall(
            b"POST /proxy/failover/config HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        _read_until_closed(slow_body)  # whatever the app answered to the cut body: it is closed
    # Three deadlines of 0.5 s each, not the minutes (or never) it took before.
    assert time.monotonic() - started < 8


def test_ordinary_requests_still_work_on_a_kept_alive_connection(server: ServeProcess) -> None:
    with _connect(server) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            time.sleep(HEAD_TIMEOUT / 2)  # idle between requests, within the keep-alive time


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_time(
    server: ServeProcess,
) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive by default
        answer = _read_until_closed(sock)  # then nothing more is sent: the server hangs up
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert answer.count(b"HTTP/1.1") == 1
