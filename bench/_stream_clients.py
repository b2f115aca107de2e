"""The long-lived streams of ``bench/dataplane.py`` in a process of their own, as real clients
would be: the benchmark's own event loop (the open-loop load, the event client) does not delay
when a stream notices a close or reconnects.

Run by ``_dataplane_scenarios.StreamClients``: ``python bench/_stream_clients.py PORT COUNT
RECONNECT`` prints ``ready`` and the relay of each stream's first line (JSON) once every stream
has its first line, and on ``stop`` (stdin) prints each stream's lines, closes and connects as
one JSON line and exits.

Twenty real clients are twenty machines, each noticing its close and reconnecting at once. Here
they share one process, so each stream is a few callbacks on uvloop (``ReconnectingStream``: no
task, no future per read). In cuts traced with ``perf sched`` (2 cores, forwarder, load 200/s),
this process ran 3.5-4.7 ms of CPU in the cut's window, against 6.3 ms as coroutines on asyncio's
loop: time that went into every plane's "first byte after the cut".
"""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import socket
import sys
import time

from _dataplane_load import SO_TIMESTAMPNS, kernel_stamp, send_when_connected

from proxy_failover.adapters.event_loop import loop_factory

REQUEST = b"GET /stream HTTP/1.1\r\nHost: bench\r\n\r\n"
ANCILLARY = socket.CMSG_SPACE(16)


class ReconnectingStream:
    """``GET /stream`` on ``port``; with ``reconnect`` opened again as soon as it closes.

    ``lines`` are (kernel receive time of their bytes, relay name); ``closes`` when this client
    saw each close, ``connects`` when it started each connect (``_dataplane_load.Stream``'s
    record, which the benchmark reads)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int, reconnect: bool) -> None:
        self.loop, self.port, self.reconnect = loop, port, reconnect
        self.lines: list[tuple[float, str]] = []
        self.closes: list[float] = []
        self.connects: list[float] = []
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.got_data = False
        self.stopped = False

    def connect(self) -> None:
        if self.stopped:
            return
        self.connects.append(time.time())
        self.buffer, self.got_data = b"", False
        sock = self.sock = socket.socket()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        code = sock.connect_ex(("127.0.0.1", self.port))
        if code not in (0, errno.EINPROGRESS):
            self._closed()
            return
        send_when_connected(
            self.loop,
            sock,
            REQUEST,
            lambda: self.loop.add_reader(sock.fileno(), self._readable),
            self._closed,
        )

    def _readable(self) -> None:
        assert self.sock is not None
        while True:
            try:
                data, ancillary, _flags, _address = self.sock.recvmsg(65536, ANCILLARY)
            except BlockingIOError:
                return
            except OSError:
                data, ancillary = b"", []
            if not data:
                self.loop.remove_reader(self.sock.fileno())
                self._closed()
                return
            self.got_data = True
            stamp = kernel_stamp(ancillary) or time.time()
            *complete, self.buffer = (self.buffer + data).split(b"\n")
            for line in complete:
                words = line.decode(errors="replace").split()
                if len(words) == 2 and words[1].isdigit():
                    self.lines.append((stamp, words[0]))

    def _closed(self) -> None:
        assert self.sock is not None
        self.sock.close()
        self.closes.append(time.time())
        if not self.reconnect or self.stopped:
            return
        if self.got_data:
            self.connect()
        else:  # refused or reset before any byte: do not spin
            self.loop.call_later(0.001, self.connect)

    def stop(self) -> None:
        self.stopped = True
        if self.sock is not None and self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.loop.remove_writer(self.sock.fileno())
            self.sock.close()


async def main(port: int, count: int, reconnect: bool) -> None:
    gc.collect()
    gc.freeze()  # nothing here may pause the streams for a full collection
    loop = asyncio.get_running_loop()
    streams = [ReconnectingStream(loop, port, reconnect) for _ in range(count)]
    for stream in streams:
        stream.connect()
    for _ in range(1000):  # every stream answered, or 10 s: the scenario says what is missing
        if all(stream.lines for stream in streams):
            break
        await asyncio.sleep(0.01)
    # Which relay each stream's first line came from: the scenario checks they start where it
    # expects (a reloaded nginx's previous worker still accepts for a while).
    print("ready", json.dumps([stream.lines[0][1] if stream.lines else None for stream in streams]))
    sys.stdout.flush()
    await loop.run_in_executor(None, sys.stdin.readline)
    for stream in streams:
        stream.stop()
    report = [
        {"lines": stream.lines, "closes": stream.closes, "connects": stream.connects}
        for stream in streams
    ]
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    runner = asyncio.Runner(loop_factory=loop_factory())
    with runner:
        runner.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "reconnect"))
