"""The load of ``bench/dataplane.py``: requests on new connections (open and closed loop), long
streams, bulk downloads, and their counters (who answered, latency percentiles).

Each request is ``GET /`` on a new TCP connection, answered with the relay's name (None: an error
a client saw); a stream is ``GET /stream``, whose lines name the relay that sends them.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * q))]


@dataclass
class Result:
    started: float
    ended: float
    name: str | None  # None: a client-visible error


def send_when_connected(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    request: bytes,
    on_sent: Callable[[], None],
    on_failed: Callable[[], None],
    waited: bool = False,
) -> None:
    """Send ``request`` (small: a fresh socket's buffer takes it whole) on ``sock``, whose
    non-blocking connect has begun, then ``on_sent()``; ``on_failed()`` if the connect failed.
    On loopback the handshake is over when ``connect`` returns, so it is sent at once, without a
    turn of the loop (a wake-up more per connection); otherwise once the socket is writable."""
    if waited:
        loop.remove_writer(sock.fileno())
    try:
        sock.send(request)
    except (BlockingIOError, InterruptedError):
        pass
    except OSError as error:
        if error.errno != errno.ENOTCONN or waited:
            on_failed()
            return
    else:
        on_sent()
        return
    args = (loop, sock, request, on_sent, on_failed, True)
    loop.add_writer(sock.fileno(), send_when_connected, *args)


class _Request:
    """``GET /`` on a new connection as a few callbacks (no task, no stream objects), as the
    stream clients are. Measured alone, a request costs this process about the same CPU either
    way (0.2 ms on this VM, mostly its wake-ups); what it saves is the turn of the loop before
    the request is sent and the coroutine machinery around each step."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int, limit_seconds: float) -> None:
        self.loop = loop
        self.started = time.time()
        self.done: asyncio.Future[Result] = loop.create_future()
        self.body = b""
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.timer = loop.call_later(limit_seconds, self._finish, False)
        if self.sock.connect_ex(("127.0.0.1", port)) not in (0, errno.EINPROGRESS):
            self._finish(False)
            return
        send_when_connected(
            loop,
            self.sock,
            REQUEST,
            lambda: loop.add_reader(self.sock.fileno(), self._readable),
            lambda: self._finish(False),
        )

    def _readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                self._finish(False)
                return
            if not data:
                self._finish(True)
                return
            self.body += data

    def _finish(self, complete: bool) -> None:
        if self.done.done():
            return
        self.timer.cancel()
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.loop.remove_writer(self.sock.fileno())
            self.sock.close()
        head, _, text = self.body.partition(b"\r\n\r\n")
        ok = complete and head.startswith(b"HTTP/1.1 200")
        self.done.set_result(
            Result(self.started, time.time(), text.decode().strip() if ok else None)
        )


def request(port: int, limit_seconds: float = 3.0) -> asyncio.Future[Result]:
    """One request on a new connection; its result (``name`` None: an error a client saw)."""
    return _Request(asyncio.get_running_loop(), port, limit_seconds).done


async def one_request(port: int, limit_seconds: float = 3.0) -> Result:
    return await request(port, limit_seconds)


async def open_loop(port: int, rate: float, duration: float) -> list[Result]:
    """``rate`` requests/s for ``duration`` s, each on a new connection, not waiting for answers."""
    loop = asyncio.get_running_loop()
    requests: list[asyncio.Future[Result]] = []
    begin = loop.time()
    n = 0
    while (due := begin + n / rate) < begin + duration:
        await asyncio.sleep(max(0.0, due - loop.time()))
        requests.append(request(port))
        n += 1
    return list(await asyncio.gather(*requests))


#: Linux's SO_TIMESTAMPNS (= SCM_TIMESTAMPNS; Python 3.11 has no constant): each read carries the
#: kernel's receive time (CLOCK_REALTIME, struct timespec), whenever the client gets to it.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@ll")


def kernel_stamp(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return float(seconds + nanoseconds / 1e9)
    return None


async def receive(sock: socket.socket) -> tuple[bytes, float]:
    """The next bytes of ``sock`` (b"" at EOF) and when the kernel received them."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            data, ancillary, _flags, _address = sock.recvmsg(65536, socket.CMSG_SPACE(16))
        except BlockingIOError:
            readable = loop.create_future()
            loop.add_reader(sock.fileno(), readable.set_result, None)
            try:
                await readable
            finally:
                loop.remove_reader(sock.fileno())
            continue
        return data, kernel_stamp(ancillary) or time.time()


@dataclass
class Stream:
    """What one long-lived ``GET /stream`` saw (``_stream_clients.py`` runs them).

    A line's time is the kernel's receive time of its bytes (``SO_TIMESTAMPNS``), not when the
    client got to read it. ``closes`` are when the client saw each close, ``connects`` when it
    started each connect: the client's own delay between the two is part of no data plane's time.
    """

    lines: list[tuple[float, str]] = field(default_factory=list)
    closes: list[float] = field(default_factory=list)
    connects: list[float] = field(default_factory=list)

    def first_from(self, name: str, after: float) -> float | None:
        return next((t for t, n in self.lines if n == name and t >= after), None)

    def still_from(self, name: str, after: float) -> bool:
        return any(n == name and t >= after for t, n in self.lines)

    def reconnected_after(self, after: float) -> tuple[float, float] | None:
        """The first close seen at or after ``after`` and the connect that followed it."""
        for index, closed in enumerate(self.closes):
            if closed >= after and index + 1 < len(self.connects):
                return closed, self.connects[index + 1]
        return None


async def wait_answered_by(port: int, name: str, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if (await one_request(port, 1.0)).name == name:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"port {port} never answered by {name}")


def summarise(results: list[Result]) -> dict[str, Any]:
    latencies = [(r.ended - r.started) * 1000 for r in results]
    return {
        "requests": len(results),
        "errors": sum(1 for r in results if r.name is None),
        "p99_ms": round(pct(latencies, 0.99), 1),
        "worst_ms": round(max(latencies), 1),
    }


async def closed_loop(port: int, workers: int = 16, duration: float = 3.0) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + duration

    async def worker() -> None:
        nonlocal errors
        while time.monotonic() < stop_at:
            result = await one_request(port)
            if result.name is None:
                errors += 1
            latencies.append((result.ended - result.started) * 1000)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return {
        "requests_per_s": round(len(latencies) / duration),
        "p50_ms": round(pct(latencies, 0.5), 2),
        "p99_ms": round(pct(latencies, 0.99), 2),
        "errors": errors,
    }


async def bulk(port: int, rounds: int = 3) -> float:
    """MB/s of 32 MiB downloads (one at a time)."""
    total, started = 0, time.perf_counter()
    for _ in range(rounds):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /bulk HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        while chunk := await reader.read(1 << 20):
            total += len(chunk)
        writer.close()
    return round(total / (time.perf_counter() - started) / 1e6, 1)
