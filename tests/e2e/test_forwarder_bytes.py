"""The forwarder's byte path with real sockets: what one end sends reaches the other intact and
in order, a half-close is passed on with the other direction still open, a slow reader does not
lose bytes (flow control), what a client sends before its upstream is connected is kept (its
reading paused past ``EARLY_LIMIT``), and both ends closing leaves nothing counted.

The forwarder runs in-process on a fixed desired state, each test on asyncio's own loop and on
uvloop (what ``proxy-failover forward`` runs on when installed): their transports differ.
``test_dataplane_forwarder.py`` runs it as a process following a real control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvloop

from proxy_failover.adapters.dataplanes.forwarder import EARLY_LIMIT, Forwarder, _Connection
from proxy_failover.adapters.dataplanes.metrics import AgentMetrics
from proxy_failover.client import AsyncFailoverClient
from proxy_failover.core.dataplane import TrafficTarget, desired_state
from tests.helpers.factories import inst
from tests.helpers.processes import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
ForwardTo = Callable[[Handler], Awaitable[tuple[int, Forwarder]]]

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


class LateConnect(Forwarder):
    """Connects upstream only once ``released`` is set: what the client sends meanwhile waits
    in the forwarder. ``waiting`` is the connection held back."""

    def __init__(self, proxy_id: str, client: AsyncFailoverClient, metrics: AgentMetrics) -> None:
        super().__init__(proxy_id, client, metrics)
        self.released = asyncio.Event()
        self.waiting: _Connection | None = None

    async def _connect(self, target: TrafficTarget, connection: _Connection) -> bool:
        self.waiting = connection
        await self.released.wait()
        return await super()._connect(target, connection)


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Iterator[Callable[[Coroutine[Any, Any, None]], None]]:
    """Runs a test's body on the loop of the parameter."""
    with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
        yield runner.run


@contextlib.asynccontextmanager
async def forwarding(kind: type[Forwarder] = Forwarder) -> AsyncIterator[ForwardTo]:
    """Starts forwarders of ``kind``, each in front of an upstream served by the given handler;
    (its port, itself)."""
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            AsyncFailoverClient("http://127.0.0.1:9", "token")  # reports fail: logged only
        )

        async def start(handler: Handler) -> tuple[int, Forwarder]:
            upstream = await asyncio.start_server(handler, "127.0.0.1", 0)
            stack.push_async_callback(upstream.wait_closed)
            stack.callback(upstream.close)
            port = upstream.sockets[0].getsockname()[1]
            forwarder = kind("p", client, AgentMetrics("test"))
            await forwarder.apply(
                desired_state(
                    "p", [inst("a", endpoint=f"127.0.0.1:{port}")], "a", 1, load_balanced=False
                )
            )
            listen = free_port()
            await stack.enter_async_context(forwarder.listening("127.0.0.1", listen))
            return listen, forwarder

        yield start


def test_a_half_close_is_passed_on_and_the_answer_still_comes_back(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    async def shout_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heard = await reader.read()  # until the client's EOF
        writer.write(heard.upper())
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        async with forwarding() as forward_to:
            port, _ = await forward_to(shout_after_eof)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"hello ")
            writer.write(b"there")
            await writer.drain()
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 10) == b"HELLO THERE"
            writer.close()

    run(scenario())


def test_a_slow_reader_gets_every_byte_in_order(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    payload = bytes(range(256)) * (24 * 4096)  # 24 MiB: far past every buffer on the way

    async def send_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for start in range(0, len(payload), 1 << 20):
            writer.write(payload[start : start + (1 << 20)])
            await writer.drain()
        writer.close()

    async def scenario() -> None:
        async with forwarding() as forward_to:
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

    run(scenario())


def test_what_a_client_sends_before_its_upstream_connects_arrives_whole_and_in_order(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    payload = bytes(range(256)) * (EARLY_LIMIT // 64)  # four times the limit
    heard: asyncio.Future[bytes]

    async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heard.set_result(await reader.read())  # until the client's EOF
        writer.close()

    async def scenario() -> None:
        nonlocal heard
        heard = asyncio.get_running_loop().create_future()
        async with forwarding(LateConnect) as forward_to:
            port, forwarder = await forward_to(keep)
            assert isinstance(forwarder, LateConnect)
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(payload)
            writer.write_eof()

            async def paused() -> _Connection:
                while True:  # the client's end stopped reading once past the limit
                    waiting = forwarder.waiting
                    client = waiting.client.transport if waiting is not None else None
                    if waiting is not None and client is not None and not client.is_reading():
                        return waiting
                    await asyncio.sleep(0.005)

            waiting = await asyncio.wait_for(paused(), 10)
            assert EARLY_LIMIT <= sum(map(len, waiting.client.early)) < len(payload)
            forwarder.released.set()
            assert await asyncio.wait_for(heard, 10) == payload
            writer.close()

    run(scenario())


def test_both_ends_close_and_the_connection_is_no_longer_counted(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hi\n")
        await writer.drain()
        await reader.read()
        writer.close()

    async def scenario() -> None:
        async with forwarding() as forward_to:
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

    run(scenario())


def test_a_connect_that_hangs_is_given_up_at_the_timeout_and_redispatched(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    """The active instance's listener drops SYNs (its accept queue is full): the connect is
    abandoned after ``connect_timeout`` and the client is answered by the next instance."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"from b\n")
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        with contextlib.ExitStack() as sockets:
            deaf = sockets.enter_context(socket.socket())
            deaf.bind(("127.0.0.1", 0))
            deaf.listen(0)  # one queued connection; the kernel drops SYNs past it
            filler = sockets.enter_context(socket.create_connection(deaf.getsockname(), 5))
            assert filler.fileno() >= 0
            deaf_port = deaf.getsockname()[1]
            upstream = await asyncio.start_server(greet, "127.0.0.1", 0)
            async with upstream, AsyncFailoverClient("http://127.0.0.1:9", "token") as client:
                metrics = AgentMetrics("test")
                forwarder = Forwarder("p", client, metrics, connect_timeout=0.2)
                b_port = upstream.sockets[0].getsockname()[1]
                instances = [
                    inst("a", priority=1, endpoint=f"127.0.0.1:{deaf_port}"),
                    inst("b", priority=2, endpoint=f"127.0.0.1:{b_port}"),
                ]
                await forwarder.apply(desired_state("p", instances, "a", 1, load_balanced=False))
                listen = free_port()
                async with forwarder.listening("127.0.0.1", listen):
                    reader, writer = await asyncio.open_connection("127.0.0.1", listen)
                    assert await asyncio.wait_for(reader.readline(), 10) == b"from b\n"
                    writer.close()
                labels = {"proxy_id": "p", "instance": "a"}
                failed = metrics.registry.get_sample_value(
                    "pfo_agent_connect_failures_total", labels
                )
                assert failed == 1

    run(scenario())
