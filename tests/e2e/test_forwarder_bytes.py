"""The forwarder's byte path with real sockets: what one end sends reaches the other intact and
in order, a half-close is passed on with the other direction still open, a slow reader does not
lose bytes (flow control), and a client gone before its upstream connected leaves nothing open.

The forwarder runs in-process on a fixed desired state; ``test_dataplane_forwarder.py`` runs it
as a process following a real control plane.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from proxy_failover.adapters.dataplanes.forwarder import Forwarder
from proxy_failover.adapters.dataplanes.metrics import AgentMetrics
from proxy_failover.client import AsyncFailoverClient
from proxy_failover.core.dataplane import desired_state
from tests.helpers.factories import inst
from tests.helpers.processes import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def forward_to() -> AsyncIterator[Callable[[Handler], Awaitable[tuple[int, Forwarder]]]]:
    """A forwarder in front of an upstream served by the given handler; (its port, itself)."""
    servers: list[asyncio.Server] = []
    contexts = []
    client = AsyncFailoverClient("http://127.0.0.1:9", "token")  # reports fail: logged only

    async def start(handler: Handler) -> tuple[int, Forwarder]:
        upstream = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(upstream)
        port = upstream.sockets[0].getsockname()[1]
        forwarder = Forwarder("p", client, AgentMetrics("test"))
        await forwarder.apply(
            desired_state(
                "p", [inst("a", endpoint=f"127.0.0.1:{port}")], "a", 1, load_balanced=False
            )
        )
        listen = free_port()
        context = forwarder.listening("127.0.0.1", listen)
        await context.__aenter__()
        contexts.append(context)
        return listen, forwarder

    async with client:
        yield start
        for context in contexts:
            await context.__aexit__(None, None, None)
        for server in servers:
            server.close()


async def test_a_half_close_is_passed_on_and_the_answer_still_comes_back(
    forward_to: Callable[[Handler], Awaitable[tuple[int, Forwarder]]],
) -> None:
    async def shout_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heard = await reader.read()  # until the client's EOF
        writer.write(heard.upper())
        await writer.drain()
        writer.close()

    port, _ = await forward_to(shout_after_eof)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hello ")
    writer.write(b"there")
    await writer.drain()
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 10) == b"HELLO THERE"
    writer.close()


async def test_a_slow_reader_gets_every_byte_in_order(
    forward_to: Callable[[Handler], Awaitable[tuple[int, Forwarder]]],
) -> None:
    payload = bytes(range(256)) * (24 * 4096)  # 24 MiB: far past every buffer on the way

    async def send_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for start in range(0, len(payload), 1 << 20):
            writer.write(payload[start : start + (1 << 20)])
            await writer.drain()
        writer.close()

    port, _ = await forward_to(send_all)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(0.3)  # the forwarder's buffers fill while nobody reads
    digest, size = hashlib.sha256(), 0
    while chunk := await asyncio.wait_for(reader.read(1 << 16), 10):
        digest.update(chunk)
        size += len(chunk)
    writer.close()
    assert size == len(payload)
    assert digest.digest() == hashlib.sha256(payload).digest()


async def test_both_ends_close_and_the_connection_is_no_longer_counted(
    forward_to: Callable[[Handler], Awaitable[tuple[int, Forwarder]]],
) -> None:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hi\n")
        await writer.drain()
        await reader.read()
        writer.close()

    port, forwarder = await forward_to(greet)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.readline(), 10) == b"hi\n"
    assert forwarder.open_connections("a") == 1
    writer.close()  # the client goes: the upstream is closed too
    await asyncio.wait_for(reader.read(), 10)
    for _ in range(500):
        if forwarder.open_connections("a") == 0:
            break
        await asyncio.sleep(0.01)
    assert forwarder.open_connections("a") == 0
