"""The built-in TCP forwarder: a data plane that needs nothing else installed.

Each accepted client connection goes to the proxy's active instance (with load balancing on: the
configured algorithm's pick, as ``core.strategies.pick_route`` makes it, least connections counted
by this forwarder). New connections follow a switch at once. Open connections of an instance that
stops taking traffic are drained (left to end) or cut (closed); by default cut when it left
unhealthy or removed, drained on a planned switchover (``--on-switch`` forces one). A connect that
fails is retried on the next eligible instance in preference order, so the client never sees it
(HAProxy's ``option redispatch``), and reported as a failed check of that instance
(``POST /proxy/instances/:id/checks``): passive detection, like HAProxy's ``observe layer4``.
Open connections per instance are exported as metrics and reported as ``connectionCount`` samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
from prometheus_client import Counter, Gauge

from proxy_failover.adapters.dataplanes.metrics import AgentMetrics
from proxy_failover.client import AsyncFailoverClient
from proxy_failover.core.dataplane import (
    DesiredState,
    SwitchPolicy,
    TrafficTarget,
    connections_to_cut,
    leaving_policy,
    stopped_serving,
)
from proxy_failover.core.errors import FailoverError
from proxy_failover.core.model import CheckResult, LoadBalancingAlgorithm
from proxy_failover.core.strategies import RouteCursor, pick_route

log = logging.getLogger("proxy_failover.forwarder")

#: What a client may send before its upstream is connected, kept to be sent on; past it the
#: client's reading pauses until then (a connect lasts ``--connect-timeout`` at most).
EARLY_LIMIT = 64 * 1024


class _Side(asyncio.Protocol):
    """One end of a forwarded connection (the client's or the upstream's): what it receives is
    written to the other end, its EOF is passed on (half-close), and a full write buffer on one
    end pauses reading on the other (flow control). Plain protocol callbacks: no task, stream
    reader or writer per connection, so a burst of reconnecting clients is forwarded at once."""

    __slots__ = ("connection", "early", "eof", "on_made", "peer", "transport")

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.eof = False
        self.early: list[bytes] = []  # received before the two ends were linked
        self.on_made: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.on_made is not None:
            self.on_made()

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
            return
        self.early.append(data)
        if self.transport is not None and sum(map(len, self.early)) >= EARLY_LIMIT:
            self.transport.pause_reading()  # resumed by link()

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None:
            if peer.eof:  # both directions ended
                self.connection.close()
                return False
            if peer.transport.can_write_eof():
                peer.transport.write_eof()
        return True  # keep the other direction open

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection.close()


class _Connection:
    """One client connection and its upstream; ``cut`` closes both ends at once, ``close``
    after what is buffered was sent. ``on_closed`` runs once, when either end went."""

    __slots__ = ("client", "closed", "on_closed", "opening", "upstream")

    def __init__(self) -> None:
        self.client = _Side(self)
        self.upstream = _Side(self)
        self.closed = False
        self.on_closed: Callable[[], None] | None = None
        self.opening: asyncio.Task[None] | None = None  # connects the upstream

    def link(self) -> None:
        """Forward both ways from now on, what either end sent meanwhile first."""
        self.client.peer, self.upstream.peer = self.upstream, self.client
        for side in (self.client, self.upstream):
            if side.transport is not None and not side.transport.is_reading():
                side.transport.resume_reading()  # paused at EARLY_LIMIT (before the writes below)
            peer = side.peer
            assert peer is not None
            if peer.transport is None:
                continue
            for data in side.early:
                peer.transport.write(data)
            side.early.clear()
            if side.eof and peer.transport.can_write_eof():
                peer.transport.write_eof()

    def cut(self) -> None:
        for side in (self.client, self.upstream):
            if side.transport is not None:
                side.transport.abort()

    def close(self) -> None:
        for side in (self.client, self.upstream):
            if side.transport is not None:
                side.transport.close()
        if not self.closed:
            self.closed = True
            if self.on_closed is not None:
                self.on_closed()


@dataclass(slots=True)
class _Counts:
    open: dict[str, set[_Connection]] = field(default_factory=dict)
    reported: dict[str, int] = field(default_factory=dict)

    def count(self, instance_id: str) -> int:
        return len(self.open.get(instance_id, ()))


class Forwarder:
    """A ``DataPlane`` that is also the data path: ``apply`` moves where new connections go."""

    def __init__(
        self,
        proxy_id: str,
        client: AsyncFailoverClient,
        metrics: AgentMetrics,
        *,
        on_switch: SwitchPolicy | None = None,
        connect_timeout: float = 1.0,
        report_counts: bool = True,
    ) -> None:
        self.proxy_id = proxy_id
        self.client = client
        self.metrics = metrics
        self.on_switch = on_switch
        self.connect_timeout = connect_timeout
        self.report_counts = report_counts  # off in a worker: its parent reports the sum
        self.state: DesiredState | None = None
        self._counts = _Counts()
        self._cursor = RouteCursor()
        self._background: set[asyncio.Task[None]] = set()
        self._meters: dict[str, tuple[Counter, Gauge]] = {}
        self._loop: asyncio.AbstractEventLoop  # the loop listening() accepts clients on
        self._server: asyncio.Server | None = None
        self._address = ""

    # --- the data plane side ------------------------------------------------------------------

    async def apply(self, state: DesiredState) -> None:
        self._move(state)
        await self._serve()
        if self.report_counts:
            self._spawn(self._report_connection_counts(state))

    async def apply_from_event(self, state: DesiredState) -> None:
        """A state told by an event: the move alone. The connection counts are reported by the
        full apply that follows (by then the clients that were cut have reconnected)."""
        self._move(state)
        await self._serve()

    def _move(self, state: DesiredState) -> None:
        previous, self.state = self.state, state
        for instance_id, target in stopped_serving(previous, state):
            policy = self.on_switch or leaving_policy(target)
            name = target.name if target else instance_id
            if policy is SwitchPolicy.CUT:
                for connection in list(self._counts.open.get(instance_id, ())):
                    connection.cut()
            self.metrics.switches.labels(self.proxy_id, policy.value).inc()
            log.info(
                "forwarder %s: %s out of traffic (%s, %d open connections)",
                self.proxy_id,
                name,
                policy.value,
                self._counts.count(instance_id),
            )
        if self.on_switch is not SwitchPolicy.DRAIN:
            # Drained connections stay only while their instance stays healthy.
            busy = [i for i, conns in self._counts.open.items() if conns]
            for instance_id in connections_to_cut(state, busy):
                for connection in list(self._counts.open[instance_id]):
                    connection.cut()

    def open_connections(self, instance_id: str) -> int:
        return self._counts.count(instance_id)

    def _candidates(self) -> list[TrafficTarget]:
        """Where a new connection goes: the chosen instance first, then the other eligible ones
        in preference order (redispatch)."""
        state = self.state
        if state is None:
            return []
        first: TrafficTarget | None
        if state.load_balanced:
            instances = state.instances
            if state.algorithm is LoadBalancingAlgorithm.LEAST_CONNECTIONS:
                instances = tuple(
                    dataclasses.replace(i, active_connections=self._counts.count(i.id))
                    for i in instances
                )
            pick, self._cursor = pick_route(instances, state.algorithm, self._cursor)
            first = state.target(pick.id) if pick is not None else None
        else:
            first = state.target(state.active_instance_id)
        rest = [t for t in state.targets if t.eligible and t is not first]
        return [t for t in ([first] if first else []) + rest if t.address is not None]

    # --- the traffic side ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def listening(
        self, host: str, port: int, *, sock: socket.socket | None = None
    ) -> AsyncIterator[asyncio.Server]:
        """Accept clients on ``host:port`` (or on the listening ``sock`` a parent bound for
        it: ``forward --workers``) for as long as the context lasts."""
        loop = self._loop = asyncio.get_running_loop()
        if sock is not None:
            server = await loop.create_server(self._accepted, sock=sock, start_serving=False)
        else:
            server = await loop.create_server(
                self._accepted, host, port, reuse_address=True, start_serving=False
            )
        self._server, self._address = server, f"{host}:{port}"
        await self._serve()
        try:
            yield server
        finally:
            server.close()
            for connections in self._counts.open.values():
                for connection in list(connections):
                    connection.cut()
            for task in list(self._background):
                task.cancel()

    async def _serve(self) -> None:
        """Accept clients once the first desired state is known: a client accepted before it
        could only be refused, one left in the listen queue is forwarded a moment later (a
        restarted ``--workers`` worker finds them queued on its socket)."""
        server = self._server
        if server is None or self.state is None or server.is_serving():
            return
        await server.start_serving()
        log.info("forwarder %s: listening on %s", self.proxy_id, self._address)

    def _accepted(self) -> asyncio.Protocol:
        """A new client: what it sends before the upstream is connected is kept (up to
        ``EARLY_LIMIT``, then its reading pauses)."""
        connection = _Connection()

        def made() -> None:
            # The loop kept by listening(): asyncio's own lookups of the running loop cost a
            # getpid() system call each on Python 3.11, and a connection made several.
            task = connection.opening = self._loop.create_task(self._open_upstream(connection))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        connection.client.on_made = made
        return connection.client

    async def _open_upstream(self, connection: _Connection) -> None:
        """Connect the upstream (redispatching a failed connect), then forward both ways."""
        for attempt, candidate in enumerate(self._candidates()):
            if connection.closed:  # the client went while we were connecting
                return
            if attempt:
                self.metrics.redispatches.labels(self.proxy_id).inc()
            if await self._connect(candidate, connection):
                self._forward(connection, candidate)
                return
        self.metrics.refused.labels(self.proxy_id).inc()
        connection.cut()

    async def _connect(self, target: TrafficTarget, connection: _Connection) -> bool:
        """One connect attempt within ``connect_timeout``: a timer that cancels the connection's
        opening task, as ``asyncio.timeout`` does, without its three lookups of the loop."""
        assert target.address is not None
        assert connection.opening is not None
        started = time.perf_counter()
        opening, expired = connection.opening, False

        def expire() -> None:
            nonlocal expired
            expired = True
            opening.cancel()

        timer = self._loop.call_later(self.connect_timeout, expire)
        try:
            await self._loop.create_connection(lambda: connection.upstream, *target.address)
            return True
        except asyncio.CancelledError:
            if not expired or opening.uncancel() > 0:
                raise  # not (only) the timeout: the forwarder is stopping
            error: Exception = TimeoutError()
        except OSError as failure:
            error = failure
        finally:
            timer.cancel()
        latency_ms = (time.perf_counter() - started) * 1000
        self.metrics.connect_failures.labels(self.proxy_id, target.name).inc()
        message = f"forwarder: connect to {target.address[0]}:{target.address[1]} failed: "
        message += str(error) or type(error).__name__
        log.warning("forwarder %s: %s (%s)", self.proxy_id, message, target.name)
        self._spawn(self._report_failure(target, latency_ms, message))
        return False

    def _forward(self, connection: _Connection, target: TrafficTarget) -> None:
        """Counted against ``target`` until either end goes."""
        if connection.closed:  # the client went during the connect: close the upstream too
            connection.close()
            return
        open_here = self._counts.open.setdefault(target.instance_id, set())
        meters = self._meters.get(target.name)
        if meters is None:  # the metrics' children, looked up once per instance name
            meters = self._meters[target.name] = (
                self.metrics.connections.labels(self.proxy_id, target.name),
                self.metrics.open_connections.labels(self.proxy_id, target.name),
            )
        accepted, gauge = meters

        def closed() -> None:
            open_here.discard(connection)
            gauge.dec()

        open_here.add(connection)
        gauge.inc()
        accepted.inc()
        connection.on_closed = closed
        connection.link()

    # --- reports to the control plane ---------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _report_failure(self, target: TrafficTarget, latency_ms: float, error: str) -> None:
        """A failed connect is a failed check: failover may start before the next probe."""
        try:
            await self.client.record_check_result(
                target.instance_id, CheckResult(False, round(latency_ms, 3), error[:1000])
            )
        except (FailoverError, httpx.HTTPError) as failure:
            log.warning("forwarder %s: could not report a failed check: %s", self.proxy_id, failure)

    async def _report_connection_counts(self, state: DesiredState) -> None:
        await report_connection_counts(
            self.client,
            state,
            lambda target: self._counts.count(target.instance_id),
            self._counts.reported,
        )


async def report_connection_counts(
    client: AsyncFailoverClient,
    state: DesiredState,
    open_connections: Callable[[TrafficTarget], int],
    reported: dict[str, int],
) -> None:
    """Open connections per instance as ``connectionCount`` samples, when they changed since
    the last one ``reported`` (instance id -> count, updated here); ``least_connections`` reads
    them. A forwarder reports its own; ``forward --workers`` the sum over its workers."""
    for target in state.targets:
        count = open_connections(target)
        if reported.get(target.instance_id) == count:
            continue
        try:
            await client.record_instance_metrics(target.instance_id, {"connectionCount": count})
        except (FailoverError, httpx.HTTPError) as failure:
            log.debug("forwarder %s: connection count not reported: %s", state.proxy_id, failure)
            return
        reported[target.instance_id] = count
