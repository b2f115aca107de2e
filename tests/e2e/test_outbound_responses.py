"""A webhook receiver or recovery endpoint answering with an endless body costs us 64 KiB at most.

The receiver here is a real socket server that answers 200 and then streams a body of gigabytes
(chunked, or with a huge Content-Length) as fast as loopback takes it, or drips it a byte at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest

from proxy_failover.adapters.outbound import RESPONSE_READ_LIMIT, post_for_status
from proxy_failover.adapters.probes import Prober
from proxy_failover.adapters.webhooks import DeliveryWorker
from proxy_failover.core.model import Notification
from proxy_failover.core.webhooks import DeliveryStatus
from proxy_failover.store.repository import Store
from tests.helpers.notifications import Repositories
from tests.helpers.outbound import LOOPBACK_ALLOWED
from tests.helpers.processes import wait_for

_GIB = 1024**3
_CHUNK = b"x" * 65536


@dataclass
class FloodingReceiver:
    """Answers every request 200 with a body that would be ``total`` bytes; counts bytes sent."""

    mode: str  # "chunked", "length" or "drip"
    sent: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await reader.readuntil(b"\r\n\r\n")
            framing = (
                b"Transfer-Encoding: chunked"
                if self.mode == "chunked"
                else b"Content-Length: %d" % (4 * _GIB)
            )
            writer.write(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n\r\n")
            while self.sent < 4 * _GIB:
                if self.mode == "drip":
                    writer.write(b"x")
                    self.sent += 1
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    continue
                data = b"%x\r\n%s\r\n" % (len(_CHUNK), _CHUNK) if self.mode == "chunked" else _CHUNK
                writer.write(data)
                self.sent += len(_CHUNK)
                await writer.drain()
        writer.close()
        self.closed.set()


@contextlib.asynccontextmanager
async def flooding(mode: str) -> AsyncIterator[FloodingReceiver]:
    receiver = FloodingReceiver(mode)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    async with server:
        yield receiver


@pytest.mark.parametrize("mode", ["chunked", "length"])
async def test_a_response_body_of_gigabytes_is_read_up_to_the_cap_and_dropped(mode: str) -> None:
    async with flooding(mode) as receiver, httpx.AsyncClient() as client:
        async with asyncio.timeout(10):
            status = await post_for_status(
                client, f"http://127.0.0.1:{receiver.port}/hook", content=b"{}"
            )
        assert status == 200
        async with asyncio.timeout(10):  # we hung up: the receiver's writes fail soon
            await receiver.closed.wait()
    # Only what the kernel's socket buffers absorbed was sent: nowhere near the 4 GiB offered.
    assert receiver.sent < 64 * 1024 * 1024, receiver.sent
    assert RESPONSE_READ_LIMIT == 64 * 1024


async def test_a_recovery_endpoint_that_floods_or_drips_ends_within_the_timeout() -> None:
    prober = Prober()
    try:
        for mode in ("chunked", "drip"):
            async with flooding(mode) as receiver, asyncio.timeout(10):
                result = await prober.request_recovery(
                    f"http://127.0.0.1:{receiver.port}/recover", {"attempt": 1}, 0.5, trusted=True
                )
            if mode == "chunked":
                assert result.success, result
                async with asyncio.timeout(10):  # we hung up after the cap: its writes fail
                    await receiver.closed.wait()
                assert receiver.sent < 64 * 1024 * 1024, receiver.sent  # of the 4 GiB offered
            else:  # 0.05 s a byte: the 0.5 s budget ends the exchange, not httpx's read timeout
                assert not result.success
                assert result.error == "timed out after 0.5 s"
    finally:
        await prober.aclose()


async def test_a_webhook_receiver_streaming_gigabytes_is_delivered_to_without_reading_them(
    store: Store, repos: Repositories
) -> None:
    hooks = repos.webhooks
    worker = DeliveryWorker(repos.queue, poll_interval_seconds=0.05, guard=LOOPBACK_ALLOWED)
    try:
        async with flooding("chunked") as receiver:
            now = datetime.now(UTC)
            url = f"http://127.0.0.1:{receiver.port}/hook"
            await hooks.create_subscription("flood", "alice", url, "s" * 16, None, now)
            async with store.write() as unit:
                unit.notify(Notification("instance.unhealthy", "flood", 1, now, {}))
            worker.start()

            async def delivered() -> bool:
                deliveries = await hooks.list_deliveries("flood")
                return [d.status for d in deliveries] == [DeliveryStatus.DELIVERED]

            await wait_for(delivered, within=10)
            async with asyncio.timeout(10):
                await receiver.closed.wait()
        assert receiver.sent < 64 * 1024 * 1024, receiver.sent
    finally:
        await worker.stop()
