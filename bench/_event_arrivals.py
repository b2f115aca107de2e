"""When the control plane's failover events reach a stream client: the part of a data plane's
follow time that is the control plane's (commit, notify, stream), measured beside the data planes.

The data planes follow ``GET /proxy/:id/stream`` like this client does, so the arrival here
estimates when theirs received the event; what a data plane adds is its time after that. The
client reads a raw socket and stamps each event with the kernel's receive time of its bytes
(``SO_TIMESTAMPNS``): the benchmark's event loop, busy with the load and the streams, does not
make the control plane look slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from urllib.parse import urlsplit

import httpx
from _dataplane_load import SO_TIMESTAMPNS, receive


class EventArrivals:
    """Follows one proxy's stream; the first arrival of each failover event, by its id."""

    def __init__(self, url: str, token: str, proxy_id: str) -> None:
        self.url = url
        self.token = token
        self.proxy_id = proxy_id
        self.by_event: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        opened = asyncio.Event()
        self._task = asyncio.create_task(self._follow(opened))
        await asyncio.wait_for(opened.wait(), 10)

    async def _follow(self, opened: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(OSError):
                await self._read(opened)
            await asyncio.sleep(0.1)

    async def _read(self, opened: asyncio.Event) -> None:
        """One stream over HTTP/1.0 (no chunked encoding: the body is the SSE text itself)."""
        address = urlsplit(self.url)
        loop = asyncio.get_running_loop()
        with socket.socket() as sock:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            await loop.sock_connect(sock, (address.hostname, address.port))
            request = (
                f"GET /proxy/{self.proxy_id}/stream HTTP/1.0\r\nHost: {address.netloc}\r\n"
                f"Authorization: Bearer {self.token}\r\nAccept: text/event-stream\r\n\r\n"
            )
            await loop.sock_sendall(sock, request.encode())
            buffer = b""
            while True:
                data, stamp = await receive(sock)
                if not data:
                    return
                *blocks, buffer = (buffer + data).replace(b"\r\n", b"\n").split(b"\n\n")
                for block in blocks:
                    if b": connected" in block:
                        opened.set()
                    self._event(block.decode(errors="replace"), stamp)

    def _event(self, block: str, stamp: float) -> None:
        kind = data = None
        for line in block.splitlines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if kind is None or data is None or not kind.startswith("failover."):
            return
        details = json.loads(data).get("data")
        if isinstance(details, dict):
            self.by_event.setdefault(str(details.get("eventId")), stamp)

    def arrival(self, event_id: str) -> float | None:
        return self.by_event.get(event_id)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class EventApplyMeter:
    """The agents' own part, from their ``pfo_agent_event_apply_seconds`` histogram: the mean
    time from an event's arrival to the data plane having applied it, over one scenario."""

    def __init__(self, metrics_urls: dict[str, str]) -> None:
        self.urls = metrics_urls  # plane -> http://.../metrics
        self._before: dict[str, tuple[float, float]] = {}

    @staticmethod
    async def _read(url: str) -> tuple[float, float]:
        """(sum, count) of the histogram, over every proxy."""
        async with httpx.AsyncClient(timeout=5) as http:
            text = (await http.get(url)).text
        total = count = 0.0
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name.startswith("pfo_agent_event_apply_seconds_sum"):
                total += float(value)
            elif name.startswith("pfo_agent_event_apply_seconds_count"):
                count += float(value)
        return total, count

    async def start(self, plane: str) -> None:
        if plane in self.urls:
            self._before[plane] = await self._read(self.urls[plane])

    async def mean_ms(self, plane: str) -> float | None:
        """Mean over the events applied since ``start(plane)``; None without metrics or events."""
        if plane not in self._before:
            return None
        total, count = await self._read(self.urls[plane])
        before_total, before_count = self._before.pop(plane)
        if count <= before_count:
            return None
        return round((total - before_total) / (count - before_count) * 1000, 2)
