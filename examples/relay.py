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
from typing import cast


def _response(status: str, body: bytes, *, close: bool) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


async def _stream(writer: asyncio.StreamWriter, name: str, interval: float) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    n = 0
    while True:
        line = f"{name} {n}\n".encode()
        writer.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
        await writer.drain()
        n += 1
        await asyncio.sleep(interval)


_BULK_CHUNK = bytes(65536)
_BULK_CHUNKS = 512  # 32 MiB


async def _bulk(writer: asyncio.StreamWriter) -> None:
    size = len(_BULK_CHUNK) * _BULK_CHUNKS
    writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
    for _ in range(_BULK_CHUNKS):
        writer.write(_BULK_CHUNK)
        await writer.drain()


async def _serve(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str, interval: float
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *headers = head.decode("latin-1").split("\r\n")
            method, path, _version = [*request_line.split(" "), "", ""][:3]
            close = any(h.lower() == "connection: close" for h in headers)
            if path == "/stream":
                await _stream(writer, name, interval)
                return
            if path == "/bulk":
                await _bulk(writer)
                if close:
                    return
                continue
            if path.startswith("/health"):
                writer.write(_response("200 OK", b"ok\n", close=close))
            elif method in ("GET", "HEAD"):
                writer.write(_response("200 OK", f"{name}\n".encode(), close=close))
            else:
                writer.write(_response("405 Method Not Allowed", b"", close=True))
                close = True
            await writer.drain()
            if close:
                return
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return
    finally:
        writer.close()


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
    server = await asyncio.start_server(
        lambda r, w: _serve(r, w, args.name, args.interval),
        args.host,
        args.port,
        reuse_address=True,
        backlog=1024,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _UdpEcho(args.name), local_addr=(args.host, port)
        )
    except OSError as error:
        sys.stderr.write(f"relay {args.name}: no UDP echo on port {port}: {error}\n")
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
