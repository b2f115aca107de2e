"""Composition root: the one place that turns settings into connected, running parts.

``open_service(url)`` gives the library alone; ``build(settings)`` gives a whole ``Runtime`` for the
entry points (API, CLI): store, service and the slots the engine and the notifier fill in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proxy_failover.adapters.event_loop import loop_factory
from proxy_failover.adapters.metrics import Metrics, ObservedProber
from proxy_failover.adapters.outbound import OutboundGuard
from proxy_failover.adapters.probes import Prober
from proxy_failover.adapters.webhooks import DeliveryWorker, Notifier
from proxy_failover.core.model import Notification
from proxy_failover.core.outbound import OutboundPolicy
from proxy_failover.core.retention import RetentionPolicy
from proxy_failover.engine import Engine, EngineSettings, EngineStats, can_change_decision
from proxy_failover.leadership import EngineLeader
from proxy_failover.service import (
    DEFAULT_CACHE_TTL_SECONDS,
    ChangeListener,
    LoggerLike,
    ProxyFailoverService,
)
from proxy_failover.store import NotificationWriter, Store
from proxy_failover.store.database import DATABASE_TIMEOUT_SECONDS, normalize_url
from proxy_failover.store.deliveries import DeliveryQueue
from proxy_failover.store.gauges import Gauges
from proxy_failover.store.leases import Leases
from proxy_failover.store.notifications import NotificationLog

if TYPE_CHECKING:
    from proxy_failover.config import Settings


# --- open_service: the library alone (store + service) ------------------------------------------


@contextlib.asynccontextmanager
async def open_service(
    url: str | None = None,
    *,
    logger: LoggerLike | None = None,
    clock: Callable[[], datetime] | None = None,
    on_change: ChangeListener | None = None,
    notification_writers: Sequence[NotificationWriter] = (),
    cache_ttl_seconds: float = DEFAULT_CACHE_TTL_SECONDS,
    pool_size: int = 5,
    max_overflow: int = 10,
    migrate: bool = True,
    database_timeout_seconds: float = DATABASE_TIMEOUT_SECONDS,
) -> AsyncIterator[ProxyFailoverService]:
    """A ready ``ProxyFailoverService`` on ``url`` (default: SQLite ``./proxy-failover.db``).

    Accepts ``sqlite:///``, ``postgresql://`` and ``postgres://`` URLs too (mapped to aiosqlite /
    asyncpg). Applies pending migrations first; starts no background work. The connection pool
    is closed when the block ends.
    """
    store = Store(
        url,
        notification_writers=notification_writers,
        pool_size=pool_size,
        max_overflow=max_overflow,
        timeout_seconds=database_timeout_seconds,
    )
    try:
        if migrate:
            await store.migrate()
        yield ProxyFailoverService(
            store,
            logger or logging.getLogger("proxy_failover"),
            clock=clock,
            on_change=on_change,
            cache_ttl_seconds=cache_ttl_seconds,
        )
    finally:
        await store.close()


# --- runtime for the entry points (API / CLI) ---------------------------------------------------


@dataclass
class Runtime:
    """Everything a running process holds; ``aclose`` releases it in reverse order of creation."""

    settings: Settings
    service: ProxyFailoverService
    store: Any = None
    #: ``EngineThread`` (the leader loop on its own thread); None with the engine disabled.
    engine: Any = None
    notifier: Any = None
    #: The outbound policy's guard: registration checks of URLs and endpoints (``core.outbound``).
    outbound: OutboundGuard = field(default_factory=lambda: OutboundGuard(OutboundPolicy()))
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def aclose(self) -> None:
        await self._stack.aclose()

    async def ping(self) -> None:
        """Raise (``StorageUnavailable``) unless the database answers a trivial read."""
        await self.service.store.ping()


async def build(settings: Settings) -> Runtime:
    """Open the database (migrated) and wire the service; background parts are added later.

    The engine is an ``EngineThread``: it runs (when the entry point runs it) on its own event
    loop, thread and connection pool, so request handling never delays its probes.
    """
    stack = contextlib.AsyncExitStack()
    try:
        service = await stack.enter_async_context(
            open_service(
                settings.database_url,
                database_timeout_seconds=settings.database_timeout_seconds,
            )
        )
    except BaseException:
        await stack.aclose()
        raise
    # A reported failure (or posted check result) that makes the active instance unhealthy fails
    # over in its own transaction, on any replica: no wait for the engine's thread, which may be
    # busy or on another replica. The engine's own probes keep its decision loop.
    service.fails_over_on_health_change = True
    notifier = build_notifier(settings, service)
    stack.push_async_callback(notifier.stop)
    engine = EngineThread(settings, service, notifier) if settings.engine_enabled else None
    return Runtime(
        settings=settings,
        service=service,
        store=service.store,
        engine=engine,
        notifier=notifier,
        outbound=OutboundGuard(settings.outbound_policy),
        _stack=stack,
    )


def build_engine(
    service: ProxyFailoverService,
    metrics: Metrics | None = None,
    *,
    tls: ssl.SSLContext | None = None,
    settings: EngineSettings | None = None,
    outbound: OutboundGuard | None = None,
) -> tuple[Engine, Prober]:
    """One health/failover engine over the service and the prober it owns (close it after).

    Nothing runs until someone awaits ``engine.run()``, and nothing wakes it until the caller
    adds ``engine.notify`` to the service's change listener (``build_leader`` does both, once
    per term of the engine lease). With ``metrics``, every probe is counted and timed (and feeds
    the time to detect). ``tls`` is the context of HTTPS probes and recovery POSTs
    (``probe_tls_context``; default: verify against the system's CAs). ``settings``: the
    engine's tuning (default: ``engine_settings()``). ``outbound``: the addresses probes and
    recovery POSTs may reach (default: ``core.outbound``'s built-in policy).
    """
    prober = Prober(ssl_context=tls, guard=outbound)
    engine = Engine(
        service,
        ObservedProber(prober, metrics) if metrics is not None else prober,
        settings or engine_settings(service.store.url.render_as_string()),
    )
    return engine, prober


#: Concurrent probe-result flushes on PostgreSQL (disjoint proxies; ``EngineSettings``).
POSTGRES_CONCURRENT_FLUSHES = 4


def engine_settings(
    database_url: str | None = None, retention: RetentionPolicy | None = None
) -> EngineSettings:
    """The engine's tuning for a database. None of it is an operator setting today (SPEC's
    intervals are per proxy, in its configuration): the defaults are what ``serve`` runs, and
    this is the one place that would map ``PFO_ENGINE_*`` settings onto them.

    On PostgreSQL a flush transaction is mostly round trips to the server (~200 ms for 500
    results when it shares the cores), so several flushes over disjoint proxies run at once;
    SQLite has one writer, so its flushes stay one at a time. ``retention``: what the leader
    prunes (``PFO_RETENTION_DAYS``, ``PFO_DELIVERY_RETENTION_DAYS``; default: SPEC's 90 / 14).
    """
    policy = retention or RetentionPolicy()
    if normalize_url(database_url).get_backend_name() == "postgresql":
        return EngineSettings(concurrent_flushes=POSTGRES_CONCURRENT_FLUSHES, retention=policy)
    return EngineSettings(retention=policy)


def retention_policy(settings: Settings) -> RetentionPolicy:
    """``PFO_RETENTION_DAYS`` and ``PFO_DELIVERY_RETENTION_DAYS`` as the engine's plain policy."""
    return RetentionPolicy(settings.retention_days, settings.delivery_retention_days)


def build_leader(
    settings: Settings,
    service: ProxyFailoverService,
    metrics: Metrics | None = None,
    *,
    is_leader: Callable[[], bool] | None = None,
) -> EngineLeader:
    """The engine as ``serve`` runs it: only while this replica holds the engine lease.

    Each term gets a fresh engine and prober (closed when the term ends); the counters of
    ``EngineStats`` are one set for the process, carried from term to term. The leader is the
    service's change listener for whichever engine is running.
    """
    tls = probe_tls_context(settings.probe_tls_verify, settings.probe_ca_file)
    tuning = engine_settings(settings.database_url, retention_policy(settings))
    outbound = OutboundGuard(settings.outbound_policy)
    stats = EngineStats()

    @contextlib.asynccontextmanager
    async def term() -> AsyncIterator[Engine]:
        engine, prober = build_engine(service, metrics, tls=tls, settings=tuning, outbound=outbound)
        engine.stats = stats
        try:
            yield engine
        finally:
            await prober.aclose()

    leader = EngineLeader(
        Leases(service.store.engine), term, ttl_seconds=settings.engine_lease_seconds
    )
    service.on_change = chain_listeners(service.on_change, leader.notify)
    if metrics is not None:
        metrics.watch_engine(stats, is_leader or (lambda: leader.is_leader))
    return leader


#: The GIL's switch interval while the engine's thread runs (Python's default: 5 ms).
ENGINE_GIL_SWITCH_SECONDS = 0.001


class EngineThread:
    """The engine as ``serve`` runs it: the leader loop (``build_leader``) on its own event loop,
    in its own thread, over its own service and connection pool on the same database.

    Request handling never queues probing, recording or deciding (issue 10): on one shared loop a
    busy API held probe answers unread past their timeout and failed over healthy instances. The
    two sides talk only by hand-offs between loops: the API service's commits wake the engine
    (``notify``, thread-safe), and the engine's commits reach the API side's listeners (webhook
    worker, event streams, metrics) and drop the API service's cached reads of that proxy. Each
    side's transactions are its own (a reported failure of the active instance fails over in the
    report's own transaction: ``health.fail_over_if_due``). ``run()`` is awaited on the API's
    loop like the engine was; ``stop()`` may be called from it.
    """

    def __init__(
        self, settings: Settings, api_service: ProxyFailoverService, notifier: Notifier
    ) -> None:
        self._settings = settings
        self._api_service = api_service
        self._notifier = notifier
        #: What the API side tells of a commit (notifier, ...), without the engine's own wake-up.
        self._api_listener = api_service.on_change
        api_service.on_change = chain_listeners(api_service.on_change, self.notify)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._leader: EngineLeader | None = None
        self._stop_requested = False

    @property
    def is_leader(self) -> bool:
        return self._leader is not None and self._leader.is_leader

    def notify(self, proxy_id: str, notifications: Sequence[Notification] = ()) -> None:
        """The API service's change listener: wake the proxy on the engine's loop, one turn of
        the API's loop later. The live streams the commit woke (``Notifier.logged``) are
        already queued on that loop, so they send first: woken at once, the engine's thread
        takes the interpreter (the GIL) to react while they wait, ~3 ms per commit measured
        (bench/commit_to_stream.py, engine on vs off)."""
        if not can_change_decision(notifications):
            return  # the engine would skip it anyway: no hand-over to its thread
        try:
            api_loop = asyncio.get_running_loop()
        except RuntimeError:  # called off a loop: nothing to let go first
            self._wake_engine(proxy_id, tuple(notifications))
            return
        api_loop.call_soon(self._wake_engine, proxy_id, tuple(notifications))

    def _wake_engine(self, proxy_id: str, notifications: tuple[Notification, ...]) -> None:
        loop, leader = self._loop, self._leader
        if loop is None or leader is None:
            return  # not running: its first evaluations read the database anyway
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(leader.notify, proxy_id, notifications)

    def stop(self) -> None:
        """Ask the engine to stop (from any thread); ``run()`` returns once it has."""
        self._stop_requested = True
        loop, leader = self._loop, self._leader
        if loop is not None and leader is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(leader.stop)

    async def run(self) -> None:
        """Run the engine's thread until ``stop()``; re-raises what ended it.

        While it runs, the interpreter hands the GIL over every ``ENGINE_GIL_SWITCH_SECONDS``
        instead of every 5 ms: each step of a probe (timer, send, answer, record, decide) waits
        for the GIL once, and behind a CPU-bound request handler each wait was up to the whole
        interval, tens of ms per probe under a saturated API (see docs/engine.md).
        """
        api_loop = asyncio.get_running_loop()
        sys.setswitchinterval(ENGINE_GIL_SWITCH_SECONDS)
        self._stop_requested = False
        done: asyncio.Future[None] = api_loop.create_future()

        def settle(error: BaseException | None) -> None:
            if done.done():
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        def main() -> None:
            error: BaseException | None = None
            try:
                with asyncio.Runner(loop_factory=loop_factory()) as runner:
                    runner.run(self._main(api_loop))
            except BaseException as exc:  # handed to the awaiting side
                error = exc
            finally:
                self._loop = self._leader = None
                with contextlib.suppress(RuntimeError):  # the API's loop is gone
                    api_loop.call_soon_threadsafe(settle, error)

        thread = threading.Thread(target=main, name="pfo-engine", daemon=True)
        thread.start()
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            self.stop()
            await asyncio.to_thread(thread.join)
            raise

    async def _main(self, api_loop: asyncio.AbstractEventLoop) -> None:
        """On the engine's thread: open its service, lead while holding the lease."""
        settings = self._settings
        notifier = self._notifier

        def tell_api(proxy_id: str, notifications: Sequence[Notification]) -> None:
            api_loop.call_soon_threadsafe(self._on_engine_commit, proxy_id, tuple(notifications))

        async with open_service(
            settings.database_url,
            migrate=False,
            notification_writers=[notifier.notification_log.write_notifications],
            on_change=tell_api,
        ) as service:
            leader = build_leader(
                settings, service, notifier.metrics, is_leader=lambda: self.is_leader
            )
            self._loop = asyncio.get_running_loop()
            self._leader = leader
            if self._stop_requested:
                return
            await leader.run()  # stop() reaches it only from here on (no await in between)

    def _on_engine_commit(self, proxy_id: str, notifications: tuple[Notification, ...]) -> None:
        """On the API's loop: the engine committed a change of ``proxy_id``."""
        self._api_service.forget_cached(proxy_id)
        if self._api_listener is not None:
            try:
                self._api_listener(proxy_id, notifications)
            except Exception:  # a listener must never break the hand-off
                logging.getLogger("proxy_failover.engine").exception("change listener failed")


def probe_tls_context(verify: bool = True, ca_file: Path | None = None) -> ssl.SSLContext:
    """TLS for HTTPS probes and recovery POSTs (``PFO_PROBE_TLS_VERIFY``, ``PFO_PROBE_CA_FILE``).

    ``ca_file`` is trusted in addition to the system's CAs, so instances behind a private CA and
    public ones can be probed by one process. Without verification any certificate is accepted:
    the probe then says whether the instance answers, not who answers.
    """
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def chain_listeners(*listeners: ChangeListener | None) -> ChangeListener | None:
    """One change listener calling each given one in turn (the service takes a single one)."""
    present = [listener for listener in listeners if listener is not None]
    if len(present) <= 1:
        return present[0] if present else None

    def fan_out(proxy_id: str, notifications: Sequence[Notification]) -> None:
        for listener in present:
            listener(proxy_id, notifications)

    return fan_out


def build_notifier(settings: Settings, service: ProxyFailoverService) -> Notifier:
    """Notification log (written in every change's transaction), webhooks, audit, delivery worker,
    metrics, streams.

    The worker is started by whoever runs the process (the API lifespan), not here.
    """
    engine = service.store.engine
    notification_log = NotificationLog(engine)
    metrics = Metrics()
    worker = DeliveryWorker(
        DeliveryQueue(engine),
        time_scale=settings.webhook_time_scale,
        timeout_seconds=settings.webhook_timeout_seconds,
        on_attempt=metrics.observe_delivery,
        guard=OutboundGuard(settings.outbound_policy),
    )
    notifier = Notifier(
        worker,
        metrics,
        notification_log=notification_log,
        gauges=Gauges(engine),
    )
    service.store.notification_writers.append(notification_log.write_notifications)
    service.on_change = chain_listeners(service.on_change, notifier.on_change)
    return notifier


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Runtime]:
    """``build`` as a context manager: the runtime is closed however the block ends."""
    runtime = await build(settings)
    try:
        yield runtime
    finally:
        await runtime.aclose()
