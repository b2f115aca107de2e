"""Active health probes (SPEC §4): HTTP(S) GET with keep-alive reuse per instance, and TCP connect.

A probe never raises for a network problem: every failure becomes a failed ``CheckResult`` with a
short reason. The HTTP client is a small HTTP/1.1 implementation on ``asyncio.Protocol`` rather
than httpx: a health probe needs only a status line and response framing, and at 10,000 probes per
second the generic client's per-request overhead costs several cores (see docs/engine.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import heapq
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httpx

from proxy_failover.adapters.outbound import (
    GuardedTransport,
    OutboundGuard,
    OutboundRefused,
    post_for_status,
)
from proxy_failover.adapters.probe_http import HttpConnection, ProtocolError
from proxy_failover.core.model import (
    CheckResult,
    FailoverConfig,
    HealthCheckType,
    Instance,
)
from proxy_failover.core.outbound import OutboundPolicy
from proxy_failover.core.validation import parse_expected_status, status_matches

_USER_AGENT = "proxy-failover-probe/1"
#: How often started probes are checked for their timeout (their deadline is kept to this).
_SWEEP_SECONDS = 0.01
_DEFAULT_PORTS = {"http": 80, "https": 443}


class EndpointError(ValueError):
    """The instance's endpoint cannot be turned into a probe target."""


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """Everything one probe needs, resolved once from an instance and its proxy's configuration."""

    instance_id: str
    kind: HealthCheckType
    host: str
    port: int
    path: str  # the HTTP request target; unused for tcp
    expected: tuple[tuple[int, int], ...]
    timeout: float
    host_header: str
    request: bytes = b""  # the HTTP request, built once (the hot path sends thousands a second)
    #: Registered by an admin or the library: internal addresses allowed (``core.outbound``).
    trusted: bool = True
    #: Pooled connections are reused only for the same scheme, host and port. Made once: the
    #: pooled path compares it twice per probe, and building it each time was ~1 % of a core.
    connection_key: tuple[str, str, int] = dataclasses.field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "connection_key", (self.kind.value, self.host, self.port))


def _split_host_port(hostport: str) -> tuple[str, int | None]:
    """'host:port', '[v6]:port' or a bare host; raises ``EndpointError`` on a bad port."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise EndpointError(f"invalid endpoint {hostport!r}")
        host, rest = hostport[1:end], hostport[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    elif hostport.count(":") == 1:
        host, port_text = hostport.split(":")
    else:
        host, port_text = hostport, ""
    if not host:
        raise EndpointError(f"invalid endpoint {hostport!r}")
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise EndpointError(f"invalid port in endpoint {hostport!r}")
    return host, int(port_text)


def _join_path(base: str, path: str) -> str:
    """The check path appended to a URL endpoint's path, with exactly one slash between."""
    if not base or base == "/":
        return path if path.startswith("/") else "/" + path
    return base.rstrip("/") + "/" + path.lstrip("/")


def build_target(instance: Instance, config: FailoverConfig) -> ProbeTarget:
    """The probe target of ``instance`` under ``config`` (SPEC §4's URL rules).

    A ``host:port`` endpoint takes the scheme of ``healthCheck.type``; a URL endpoint keeps its own
    scheme (for http/https checks) and gets ``healthCheck.path`` appended to its path; ``tcp``
    connects to the endpoint's host and port. Raises ``EndpointError`` when there is no usable
    endpoint.
    """
    endpoint = (instance.endpoint or "").strip()
    if not endpoint:
        raise EndpointError("instance has no endpoint")
    check = config.health_check
    kind = check.type
    if "://" in endpoint:
        url = urlsplit(endpoint)
        scheme = url.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise EndpointError(f"unsupported endpoint scheme {scheme!r}")
        host, port = _split_host_port(url.netloc.rpartition("@")[2])
        port = port or _DEFAULT_PORTS[scheme]
        if kind is not HealthCheckType.TCP:
            kind = HealthCheckType(scheme)
        path = _join_path(url.path, check.path)
        if url.query:
            path += "?" + url.query
    else:
        host, maybe_port = _split_host_port(endpoint)
        if maybe_port is None:
            if kind is HealthCheckType.TCP:
                raise EndpointError(f"tcp check needs a port in endpoint {endpoint!r}")
            maybe_port = _DEFAULT_PORTS[kind.value]
        port = maybe_port
        path = _join_path("", check.path)
    default_port = _DEFAULT_PORTS.get(kind.value)
    bracketed = f"[{host}]" if ":" in host else host
    host_header = bracketed if port == default_port else f"{bracketed}:{port}"
    return ProbeTarget(
        instance_id=instance.id,
        kind=kind,
        host=host,
        port=port,
        path=path,
        expected=parse_expected_status(check.expected_status),
        timeout=config.health_check_timeout_seconds,
        host_header=host_header,
        trusted=instance.outbound_trusted,
        request=(
            f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\n"
            f"User-Agent: {_USER_AGENT}\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n"
        ).encode("latin-1"),
    )


def _describe(exc: BaseException) -> str:
    """A short, stable reason for a failed probe (kept in ``lastError``)."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, OutboundRefused):
        return f"refused by the outbound policy: {exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ProtocolError):
        return f"invalid HTTP response: {exc}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


class Prober:
    """Runs probes with bounded total concurrency and one pooled connection per instance.

    The engine never probes one instance twice at once; if a caller does, the second probe simply
    opens its own connection. ``forget`` drops an instance's pooled connection (when it is removed,
    put into maintenance, or its endpoint changes).
    """

    def __init__(
        self,
        *,
        max_concurrency: int = 10_000,
        max_connecting: int = 256,
        verify_tls: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        guard: OutboundGuard | None = None,
    ) -> None:
        self._guard = guard or OutboundGuard(OutboundPolicy())
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._max_concurrency = max_concurrency
        self._active = 0  # probes in flight, both paths (``start`` takes a slot only if free)
        self._retries: set[asyncio.Task[None]] = set()  # their retries on a fresh connection
        #: (deadline, seq, probe) of the probes ``start`` began, until swept (finished or not)
        self._deadlines: list[tuple[float, int, _PooledProbe]] = []
        self._sequence = 0
        self._sweeper: asyncio.TimerHandle | None = None
        # New connections cost far more CPU than a request on a pooled one; opening thousands at
        # once (a cold start) makes them all miss their timeout and retry forever. Bounding the
        # connects in flight lets each round establish what it can and the pool converge.
        self._connecting = asyncio.Semaphore(max_connecting)
        self._pool: dict[str, tuple[tuple[str, str, int], HttpConnection]] = {}
        if ssl_context is None:
            ssl_context = ssl.create_default_context()
            if not verify_tls:
                ssl_context.check_hostname = False
                ssl_context.verify_mode = ssl.CERT_NONE
        self._ssl = ssl_context
        self._http_clients: dict[bool, httpx.AsyncClient] = {}  # recovery POSTs, by trust
        self._opening: dict[str, asyncio.Task[None]] = {}  # connects in flight, per instance
        #: Called with the instance id when the peer closes an idle pooled connection (the engine
        #: uses it to probe that instance early: a killed process closes its sockets at once).
        self.on_connection_lost: Callable[[str], None] | None = None

    def prepare(self, instance: Instance, config: FailoverConfig) -> ProbeTarget:
        """The engine's hook: resolve the target once per instance/config change."""
        return build_target(instance, config)

    async def request_recovery(
        self, url: str, payload: dict[str, Any], timeout_s: float, *, trusted: bool
    ) -> CheckResult:
        """POST a recovery request (SPEC §5); any 2xx is success, nothing raises. ``trusted``: the
        URL was registered by an admin (or the library), so internal addresses are allowed."""
        client = self._http_clients.get(trusted)
        if client is None:
            transport = GuardedTransport(self._guard, trusted=trusted, verify=self._ssl)
            client = self._http_clients[trusted] = httpx.AsyncClient(transport=transport)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):  # the whole exchange, a dripped body too
                status = await post_for_status(client, url, json=payload, timeout=timeout_s)
        except TimeoutError:
            return CheckResult(False, _elapsed_ms(started), f"timed out after {timeout_s:g} s")
        except httpx.HTTPError as exc:
            return CheckResult(False, _elapsed_ms(started), f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return CheckResult(True, _elapsed_ms(started))
        return CheckResult(False, _elapsed_ms(started), f"HTTP status {status}")

    def start(self, target: ProbeTarget, on_result: Callable[[CheckResult], None]) -> bool:
        """Start an HTTP(S) probe on the instance's pooled keep-alive connection and return True;
        ``on_result`` is called with its result, exactly once, from the event loop. False (nothing
        started) when there is no usable pooled connection or no free slot: use ``probe``.

        Why: at 10,000 probes a second, a task, a timeout context and a semaphore per probe cost
        more CPU than the request itself; here a probe is a write, a timer and a callback.
        """
        if target.kind is HealthCheckType.TCP or self._active >= self._max_concurrency:
            return False
        pooled = self._pool.pop(target.instance_id, None)
        if pooled is None:
            return False
        key, conn = pooled
        if key != target.connection_key or conn.is_closed:
            conn.close()
            return False
        self._active += 1
        probe = _PooledProbe(self, target, conn, on_result)
        self._sequence += 1
        heapq.heappush(self._deadlines, (probe.started + target.timeout, self._sequence, probe))
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_SECONDS, self._sweep)
        conn.send(target.request, probe.answered)
        return True

    def _sweep(self) -> None:
        """Time out the started probes past their deadline. One timer for all of them: a loop
        timer per probe cost more than the rest of the probe; the price is up to
        ``_SWEEP_SECONDS`` of lateness in declaring a timeout."""
        self._sweeper = None
        deadlines = self._deadlines
        now = time.perf_counter()
        while deadlines and (deadlines[0][2].finished or deadlines[0][0] <= now):
            _, _, probe = heapq.heappop(deadlines)
            if not probe.finished:
                probe.timed_out()
        if deadlines:
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_SECONDS, self._sweep)

    async def probe(self, target: ProbeTarget) -> CheckResult:
        """One probe of ``target``; never raises for network errors or timeouts."""
        async with self._semaphore:
            self._active += 1
            try:
                return await self._probe(target)
            finally:
                self._active -= 1

    async def _probe(self, target: ProbeTarget) -> CheckResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(target.timeout):
                if target.kind is HealthCheckType.TCP:
                    await self._tcp(target)
                    return CheckResult(True, _elapsed_ms(started))
                status = await self._http(target)
        except TimeoutError:
            self._discard(target.instance_id)
            return CheckResult(False, _elapsed_ms(started), f"timeout after {target.timeout:g}s")
        except (OSError, ProtocolError, ValueError) as exc:
            self._discard(target.instance_id)
            return CheckResult(False, _elapsed_ms(started), _describe(exc))
        latency = _elapsed_ms(started)
        if status_matches(target.expected, status):
            return CheckResult(True, latency)
        return CheckResult(False, latency, f"unexpected HTTP status {status}")

    def forget(self, instance_id: str) -> None:
        """Close and drop the pooled connection of an instance that is no longer probed."""
        opening = self._opening.pop(instance_id, None)
        if opening is not None:
            opening.cancel()
        self._discard(instance_id)

    def pooled_connections(self) -> int:
        return len(self._pool)

    async def aclose(self) -> None:
        for _, _, probe in self._deadlines:  # every started probe not yet swept: disarm the rest
            probe.disarm()
        self._deadlines.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        opening = [*self._opening.values(), *self._retries]
        for task in opening:
            task.cancel()
        await asyncio.gather(*opening, return_exceptions=True)
        for _, conn in self._pool.values():
            conn.abort()
        self._pool.clear()
        for client in self._http_clients.values():
            await client.aclose()
        self._http_clients.clear()
        await asyncio.sleep(0)  # let transports run their close callbacks

    # --- internals ----------------------------------------------------------------------------
    def _opening_task(self, target: ProbeTarget) -> asyncio.Task[None]:
        task = self._opening.get(target.instance_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._open(target))
            self._opening[target.instance_id] = task
            task.add_done_callback(functools.partial(self._opened, target.instance_id))
        return task

    async def _open(self, target: ProbeTarget) -> None:
        async with self._connecting:
            conn = await self._connect(target)
        previous = self._pool.pop(target.instance_id, None)
        if previous is not None:
            previous[1].close()
        self._pool[target.instance_id] = (target.connection_key, conn)

    def _opened(self, instance_id: str, task: asyncio.Task[None]) -> None:
        if self._opening.get(instance_id) is task:
            del self._opening[instance_id]
        if not task.cancelled():
            task.exception()  # retrieved here: the probe waiting on it (if any) reports it

    def _discard(self, instance_id: str) -> None:
        pooled = self._pool.pop(instance_id, None)
        if pooled is not None:
            pooled[1].close()

    async def _tcp(self, target: ProbeTarget) -> None:
        async with self._connecting:
            transport, _ = await self._create_connection(target, asyncio.Protocol)
        transport.close()

    async def _create_connection(
        self,
        target: ProbeTarget,
        protocol: Callable[[], asyncio.BaseProtocol],
        tls: ssl.SSLContext | None = None,
    ) -> tuple[asyncio.BaseTransport, Any]:
        """Connect to the first answering address the outbound policy allows for ``target``:
        the very addresses checked, so a name re-resolved elsewhere (DNS rebinding) is never
        reached. TLS still verifies and sends SNI for the name."""
        loop = asyncio.get_running_loop()
        addresses = await self._guard.addresses(target.host, target.port, trusted=target.trusted)
        server_hostname = target.host if tls is not None else None
        error: OSError | None = None
        for address in addresses:
            try:
                return await loop.create_connection(
                    protocol, address, target.port, ssl=tls, server_hostname=server_hostname
                )
            except OSError as exc:
                error = exc
        assert error is not None  # the resolver gives at least one address or raises
        raise error

    async def _connect(self, target: ProbeTarget) -> HttpConnection:
        use_tls = target.kind is HealthCheckType.HTTPS
        listener = self.on_connection_lost
        instance_id = target.instance_id

        def protocol() -> HttpConnection:
            if listener is None:
                return HttpConnection()
            return HttpConnection(lambda: listener(instance_id))

        _, conn = await self._create_connection(target, protocol, self._ssl if use_tls else None)
        return cast(HttpConnection, conn)

    async def _http(self, target: ProbeTarget) -> int:
        payload = target.request
        pooled = self._pool.pop(target.instance_id, None)
        conn: HttpConnection | None = None
        if pooled is not None:
            key, candidate = pooled
            if key == target.connection_key and not candidate.is_closed:
                conn = candidate
            else:
                candidate.close()
        if conn is not None:
            try:
                status, reusable = await conn.request(payload)
            except (ConnectionResetError, BrokenPipeError):
                conn.close()
                if conn.received_any:
                    raise
                conn = None  # the server closed an idle keep-alive connection: retry once fresh
            except BaseException:
                conn.close()
                raise
        if conn is None:
            # The connect runs in its own task: when this probe times out, the connection still
            # completes and waits in the pool for the next probe, so a cold start of thousands of
            # instances converges instead of retrying the same connects forever.
            await asyncio.shield(self._opening_task(target))
            pooled = self._pool.pop(target.instance_id, None)
            if pooled is None or pooled[0] != target.connection_key:
                if pooled is not None:
                    pooled[1].close()
                raise ConnectionResetError("connection closed before use")
            conn = pooled[1]
            try:
                status, reusable = await conn.request(payload)
            except BaseException:
                conn.close()
                raise
        if reusable and not conn.is_closed:
            self._pool[target.instance_id] = (target.connection_key, conn)
        else:
            conn.close()
        return status


class _PooledProbe:
    """One probe started by ``Prober.start``: its answer, its timeout or a dropped connection
    ends it, whichever comes first; the others then find it finished."""

    __slots__ = ("_conn", "_on_result", "_prober", "_target", "finished", "started")

    def __init__(
        self,
        prober: Prober,
        target: ProbeTarget,
        conn: HttpConnection,
        on_result: Callable[[CheckResult], None],
    ) -> None:
        self._prober = prober
        self._target = target
        self._conn = conn
        self._on_result = on_result
        self.started = time.perf_counter()
        self.finished = False

    def answered(self, outcome: tuple[int, bool] | BaseException) -> None:
        if not self._finish():
            return
        target, conn = self._target, self._conn
        if isinstance(outcome, BaseException):
            conn.close()
            if (
                isinstance(outcome, ConnectionResetError | BrokenPipeError)
                and not conn.received_any
            ):
                # The server closed the idle keep-alive connection (as ``probe`` does: retry once,
                # on a fresh connection, within the same timeout).
                retry = asyncio.get_running_loop().create_task(self._retry())
                self._prober._retries.add(retry)
                retry.add_done_callback(self._prober._retries.discard)
                return
            self._deliver(CheckResult(False, _elapsed_ms(self.started), _describe(outcome)))
            return
        status, reusable = outcome
        prober = self._prober
        if reusable and not conn.is_closed and target.instance_id not in prober._pool:
            prober._pool[target.instance_id] = (target.connection_key, conn)
        else:
            conn.close()
        latency = _elapsed_ms(self.started)
        if status_matches(target.expected, status):
            self._deliver(CheckResult(True, latency))
        else:
            self._deliver(CheckResult(False, latency, f"unexpected HTTP status {status}"))

    def timed_out(self) -> None:
        if not self._finish():
            return
        self._conn.abandon()
        message = f"timeout after {self._target.timeout:g}s"
        self._deliver(CheckResult(False, _elapsed_ms(self.started), message))

    def disarm(self) -> None:
        """The prober is closing: end without a result."""
        if self._finish():
            self._conn.abandon()

    def _finish(self) -> bool:
        """Mark finished; False if it already was."""
        if self.finished:
            return False
        self.finished = True
        self._prober._active -= 1
        return True

    def _deliver(self, result: CheckResult) -> None:
        self._on_result(result)

    async def _retry(self) -> None:
        remaining = self._target.timeout - (time.perf_counter() - self.started)
        target = dataclasses.replace(self._target, timeout=max(remaining, 0.001))
        result = await self._prober.probe(target)
        self._deliver(dataclasses.replace(result, latency_ms=_elapsed_ms(self.started)))


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
