"""What every use case shares: the store, the clock, the read cache, the instance → proxy map and
the change listener, with the plumbing around them (one locked write transaction, cached reads,
and the one place that tells listeners about a commit)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from proxy_failover.core import strategies
from proxy_failover.core.errors import config_not_found, instance_not_found
from proxy_failover.core.model import Instance, Notification, ProxySnapshot, RedundancyStatus
from proxy_failover.store import Reader, Store, UnitOfWork
from proxy_failover.store.audit import AuditLog
from proxy_failover.store.webhooks import WebhookStore

#: Called after a commit with the proxy id and the notifications that commit produced.
ChangeListener = Callable[[str, Sequence[Notification]], None]

DEFAULT_CACHE_TTL_SECONDS = 1.0

T = TypeVar("T")

_log = logging.getLogger("proxy_failover.service")


class LoggerLike(Protocol):
    def info(self, msg: str, *args: Any, **kwargs: Any) -> Any: ...
    def warning(self, msg: str, *args: Any, **kwargs: Any) -> Any: ...


def log_fields(
    proxy_id: str | None = None,
    instance_id: str | None = None,
    epoch: int | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """``extra=`` for a log call: the ids it is about, as structured fields of the JSON line
    (``entrypoints.logs`` renders them); the sentence stays for people."""
    given = {"proxy_id": proxy_id, "instance_id": instance_id, "epoch": epoch, "event_id": event_id}
    return {key: value for key, value in given.items() if value is not None}


def utcnow() -> datetime:
    return datetime.now(UTC)


class ReadCache:
    """Per-proxy read cache with a TTL and a generation counter.

    Every write through the service bumps the proxy's generation before it starts and after it
    commits; a read stores its result only if the generation did not move while it ran, so a
    read that raced a write never caches the old value.
    """

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds
        self._entries: dict[tuple[str, str], tuple[float, Any]] = {}
        self._generations: dict[str, int] = {}

    def get(self, kind: str, proxy_id: str) -> tuple[bool, Any]:
        if self.ttl <= 0:
            return False, None
        entry = self._entries.get((kind, proxy_id))
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def generation(self, proxy_id: str) -> int:
        return self._generations.get(proxy_id, 0)

    def put(self, kind: str, proxy_id: str, value: Any, generation: int) -> None:
        if self.ttl > 0 and self.generation(proxy_id) == generation:
            self._entries[(kind, proxy_id)] = (time.monotonic() + self.ttl, value)

    def invalidate(self, proxy_id: str) -> None:
        self._generations[proxy_id] = self.generation(proxy_id) + 1
        for kind in ("config", "instances", "redundancy"):
            self._entries.pop((kind, proxy_id), None)


class ServiceContext:
    """The state the use-case modules share; the facade owns one and hands it to each call.

    ``on_change`` may be replaced at any time (the composition root chains listeners onto it).
    """

    def __init__(
        self,
        store: Store,
        logger: LoggerLike,
        clock: Callable[[], datetime],
        on_change: ChangeListener | None,
        cache_ttl_seconds: float,
    ) -> None:
        self.store = store
        self.logger = logger
        self.clock = clock
        self.on_change = on_change
        self.cache = ReadCache(cache_ttl_seconds)
        self.route_cursors: dict[str, strategies.RouteCursor] = {}
        #: An instance's proxy never changes: remembered to lock the right proxy without a read.
        self.instance_proxy: dict[str, str] = {}
        #: A health change that makes the active instance unhealthy fails over in its own
        #: transaction (``health.fail_over_if_due``): what ``serve`` runs; off for the bare library.
        self.fails_over_on_health_change = False
        #: Outside the per-proxy units of work: each writes in a short transaction of its own.
        self.webhooks = WebhookStore(store.engine)
        self.audit = AuditLog(store.engine)
        store.before_close.append(self.audit.close)  # rows a full disk refused: a last try

    def now(self) -> datetime:
        """The clock's now in UTC; a naive clock is a programming error, refused loudly."""
        now = self.clock()
        if now.tzinfo is None:
            raise ValueError("the service clock must return timezone-aware datetimes")
        return now.astimezone(UTC)

    async def cached(self, kind: str, proxy_id: str, load: Callable[[Reader], Awaitable[T]]) -> T:
        """``load``'s answer for the proxy, from the cache while fresh (see ``ReadCache``)."""
        hit, value = self.cache.get(kind, proxy_id)
        if hit:
            return value  # type: ignore[no-any-return]
        generation = self.cache.generation(proxy_id)
        async with self.store.read() as reader:
            loaded = await load(reader)
        self.cache.put(kind, proxy_id, loaded, generation)
        return loaded

    @contextlib.asynccontextmanager
    async def write(
        self, proxy_id: str
    ) -> AsyncIterator[tuple[UnitOfWork, RedundancyStatus | None]]:
        """One write transaction holding ``proxy_id``'s lock (its redundancy row, None if the
        proxy does not exist); listeners are told after commit."""
        self.cache.invalidate(proxy_id)
        async with self.store.write() as unit:
            locked = await unit.lock_proxy(proxy_id)
            yield unit, locked
        self.cache.invalidate(proxy_id)
        self.announce(unit, [proxy_id], quiet=[proxy_id] if unit.quiet else ())

    def announce(
        self, unit: UnitOfWork, proxy_ids: Iterable[str], *, quiet: Collection[str] = ()
    ) -> None:
        """After ``unit`` committed: tell ``on_change`` of each proxy it changed, with that
        proxy's own notifications. A proxy in ``quiet`` (nothing a listener acts on changed) is
        told only if it has notifications. A listener's error is logged, never raised: it must
        not undo or fail a committed change."""
        if self.on_change is None:
            return
        for proxy_id in proxy_ids:
            notifications = tuple(n for n in unit.notifications if n.proxy_id == proxy_id)
            if not notifications and proxy_id in quiet:
                continue
            try:
                self.on_change(proxy_id, notifications)
            except Exception:
                _log.exception("on_change listener failed")

    async def proxy_of_instance(self, instance_id: str) -> str:
        """The proxy an instance belongs to (an id's proxy never changes), or 004."""
        proxy_id = self.instance_proxy.get(instance_id)
        if proxy_id is not None:
            return proxy_id
        async with self.store.read() as reader:
            instance = await reader.get_instance(instance_id)
        if instance is None:
            raise instance_not_found(instance_id)
        self.instance_proxy[instance_id] = instance.proxy_id
        return instance.proxy_id

    def forget_instance(self, instance_id: str) -> None:
        self.instance_proxy.pop(instance_id, None)

    async def locked_instance(self, unit: UnitOfWork, instance_id: str) -> Instance:
        """The instance as the locked unit sees it, or 004."""
        instance = await unit.get_instance(instance_id)
        if instance is None:
            self.forget_instance(instance_id)
            raise instance_not_found(instance_id)
        return instance


async def read_snapshot(reader: Reader, proxy_id: str, status: RedundancyStatus) -> ProxySnapshot:
    """The proxy's config, instances (preference order) and open switch, with ``status`` (002)."""
    config = await reader.get_config(proxy_id)
    if config is None:
        raise config_not_found(proxy_id)
    instances = strategies.in_preference_order(await reader.list_instances(proxy_id))
    return ProxySnapshot(config, instances, status, await reader.open_switch_event(proxy_id))
