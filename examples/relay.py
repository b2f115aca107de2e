"""A stand-in streaming relay for the data-plane demo, tests and benchmark: says who it is.

Run: python examples/relay.py --name edge-a --port 9001   (port 0: any free port, printed first)

HTTP/1.1 with keep-alive: ``GET /health`` answers 200, ``GET /`` answers ``<name>\\n``,
``GET /stream`` sends ``<name> <n>\\n`` every ``--interval`` seconds until the client leaves (a
long-lived stream, as an RTMP/SRT/HLS relay would hold); ``GET /bulk`` sends 32 MiB (throughput).
UDP on the same port number (SRT's transport): each datagram is answered with ``<name> <the
datagram>`` (skipped, with a line on stderr, when that UDP port is taken).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable
from typing import cast


def _response(status: str, body: bytes, *, close: bool) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


_STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
_BULK_CHUNK = bytes(65536)
_BULK_CHUNKS = 512  # 32 MiB
_MAX_HEAD = 65536


class _Http(asyncio.Protocol):
    """One client connection: keep-alive requests, or a stream, or a bulk download.

    Callbacks on the transport rather than a task per connection: when a cut moves many streams
    at once, each new one gets its first line within microseconds, as a real relay's would,
    instead of waiting for the others' coroutines (the data-plane benchmark's floor)."""

    def __init__(self, name: str, interval: float) -> None:
        self.name, self.interval = name, interval
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.busy = False  # streaming or sending a bulk body: further input is ignored
        self.lines = 0
        self.timer: asyncio.TimerHandle | None = None
        self.bulk_left = 0
        self.writable = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        if self.busy:
            return
        self.buffer += data
        while not self.busy and b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            self._request(head)
        if len(self.buffer) > _MAX_HEAD:
            self._close()

    def _request(self, head: bytes) -> None:
        assert self.transport is not None
        request_line, *headers = head.decode("latin-1").split("\r\n")
        method, path, _version = [*request_line.split(" "), "", ""][:3]
        close = any(h.lower() == "connection: close" for h in headers)
        if path == "/stream":
            self.busy = True
            self.transport.write(_STREAM_HEAD)
            self._line()
            return
        if path == "/bulk":
            self.busy = True
            asyncio.get_running_loop().create_task(self._bulk(close))
            return
        if path.startswith("/health"):
            self.transport.write(_response("200 OK", b"ok\n", close=close))
        elif method in ("GET", "HEAD"):
            self.transport.write(_response("200 OK", f"{self.name}\n".encode(), close=close))
        else:
            self.transport.write(_response("405 Method Not Allowed", b"", close=True))
            close = True
        if close:
            self._close()

    def _line(self) -> None:
        """The stream's next line, then the next one ``interval`` later, until the client goes."""
        assert self.transport is not None
        if self.transport.is_closing():
            return
        line = f"{self.name} {self.lines}\n".encode()
        self.transport.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
        self.lines += 1
        self.timer = asyncio.get_running_loop().call_later(self.interval, self._line)

    async def _bulk(self, close: bool) -> None:
        assert self.transport is not None
        size = len(_BULK_CHUNK) * _BULK_CHUNKS
        self.transport.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
        for _ in range(_BULK_CHUNKS):
            if self.transport.is_closing():
                return
            self.transport.write(_BULK_CHUNK)
            await self.writable.wait()
        if close:
            self._close()
            return
        self.busy = False
        self.data_received(b"")  # a request that came meanwhile

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def _close(self) -> None:
        self.busy = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.writable.set()  # a bulk body in progress sees the closed transport and stops


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, name: str) -> None:
        self.prefix = f"{name} ".encode()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(self.prefix + data, addr)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between lines")
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Http(args.name, args.interval),
        args.host,
        args.port,
        reuse_address=True,
        backlog=1024,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        await loop.create_datagram_endpoint(
            lambda: _UdpEcho(args.name), local_addr=(args.host, port)
        )
    except OSError as error:
        sys.stderr.write(f"relay {args.name}: no UDP echo on port {port}: {error}\n")
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop when installed (it comes with proxy-failover's dependencies), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


if __name__ == "__main__":
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=_loop_factory()) as runner,
    ):
        runner.run(main())
