"""The use cases — the seed's service methods and SPEC §7's additions — one transaction each.

The core decides, the store persists; nothing here returns ORM rows. Every change of instances,
health or the active pointer recomputes redundancy in the same transaction. Every write for a
proxy runs in a unit of work that first locks that proxy (row lock on PostgreSQL, ``BEGIN
IMMEDIATE`` on SQLite), so compare-and-swaps hold across processes and replicas.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from proxy_failover.core import failover as core_failover
from proxy_failover.core import health as core_health
from proxy_failover.core import redundancy as core_redundancy
from proxy_failover.core import strategies, validation
from proxy_failover.core.errors import Conflict, ErrorCode, InvalidInput, NotFound
from proxy_failover.core.model import (
    STALE_EVENT_SECONDS,
    SWITCHING_EVENT_TYPES,
    AdminState,
    CheckResult,
    Decision,
    DecisionAction,
    Evaluation,
    EventStatus,
    EventType,
    Explanation,
    FailoverConfig,
    FailoverEvent,
    HealthRules,
    HealthState,
    HealthStatus,
    Instance,
    MetricSample,
    Notification,
    ProxySnapshot,
    ProxySummary,
    RedundancyStatus,
    Route,
    StoredMetricSample,
)
from proxy_failover.store import Reader, Store, UnitOfWork, new_id
from proxy_failover.store.group_commit import GroupCommit

#: Called after a commit with the proxy id and the notifications that commit produced.
ChangeListener = Callable[[str, Sequence[Notification]], None]

#: Notification types (SPEC §8) produced by the use cases.
FAILOVER_STARTED = "failover.started"
FAILOVER_COMPLETED = "failover.completed"
FAILOVER_FAILED = "failover.failed"
INSTANCE_UNHEALTHY = "instance.unhealthy"
INSTANCE_HEALTHY = "instance.healthy"
INSTANCE_RECOVERY_FAILED = "instance.recovery_failed"
REDUNDANCY_DEGRADED = "redundancy.degraded"
REDUNDANCY_RESTORED = "redundancy.restored"

DEFAULT_REASON = "Manual failover"
SUPERSEDED_MESSAGE = "superseded by automatic failover"
STALE_MESSAGE = (
    f"timed out: still in progress after {STALE_EVENT_SECONDS:g} s "
    "(the process handling it probably stopped)"
)
MAX_LIST_LIMIT = 1000
DEFAULT_CACHE_TTL_SECONDS = 1.0

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class _HealthReport:
    """One ``update_instance_health`` call waiting for its (shared) transaction."""

    proxy_id: str
    instance_id: str
    status: HealthStatus
    sample: MetricSample | None


class _Keep(enum.Enum):
    """Sentinel for "leave the active pointer where it is"."""

    POINTER = enum.auto()


class LoggerLike(Protocol):
    def info(self, msg: str, *args: Any) -> Any: ...
    def warning(self, msg: str, *args: Any) -> Any: ...


#: Up to this many instances of one proxy in a batch of check results are loaded one by one;
#: beyond, the proxy's whole instance list in one query.
_FEW_CHECKS = 8


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _ReadCache:
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


def _ms_between(start: datetime, end: datetime) -> int:
    return max(0, int((end - start).total_seconds() * 1000))


def _event_data(event: FailoverEvent) -> dict[str, Any]:
    return {
        "eventId": event.id,
        "eventType": event.event_type.value,
        "status": event.status.value,
        "sourceInstanceId": event.source_instance_id,
        "targetInstanceId": event.target_instance_id,
        "reason": event.reason,
        "triggeredBy": event.triggered_by,
        "errorMessage": event.error_message,
        "durationMs": event.duration_ms,
    }


def _require_text(value: object, field: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(
            f"{field} is required and must be a non-empty string", details={"field": field}
        )
    return value


def _parse_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInput(
            f"limit must be an integer between 1 and {MAX_LIST_LIMIT}", details={"field": "limit"}
        )
    return limit


def _parse_close_status(status: object) -> EventStatus:
    try:
        parsed = EventStatus(status) if isinstance(status, str) else EventStatus.PENDING
    except ValueError:
        parsed = EventStatus.PENDING
    if parsed not in (EventStatus.COMPLETED, EventStatus.FAILED):
        raise InvalidInput("status must be 'completed' or 'failed'", details={"field": "status"})
    return parsed


class ProxyFailoverService:
    """Facade over the store with every method of SPEC §6 (snake_case of the seed's).

    ``clock`` returns timezone-aware UTC now (inject a fake one in tests). ``on_change`` is called
    after each commit with the proxy id and the notifications that commit produced (possibly none):
    the engine uses it to wake up at once (a repeated health report that moves no status wakes
    nobody: see ``_is_repeat``). Reads of configuration, instances and redundancy are
    served from an in-process cache that every write through this service invalidates for its
    proxy, so a read after a write never returns the old value; because other replicas may write
    the same PostgreSQL database, entries also expire after ``cache_ttl_seconds`` (default 1 s,
    0 disables the cache), which bounds how stale a read can be across processes.
    """

    def __init__(
        self,
        store: Store,
        logger: LoggerLike | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        on_change: ChangeListener | None = None,
        cache_ttl_seconds: float = DEFAULT_CACHE_TTL_SECONDS,
    ) -> None:
        self.store = store
        self.logger: LoggerLike = logger or logging.getLogger("proxy_failover.service")
        self.clock: Callable[[], datetime] = clock or _utcnow
        self.on_change = on_change
        self._cache = _ReadCache(cache_ttl_seconds)
        self._route_cursors: dict[str, strategies.RouteCursor] = {}
        self._instance_proxy: dict[str, str] = {}
        #: Health reports are group-committed: one writer on SQLite, one per proxy on PostgreSQL.
        self.health_reports: GroupCommit[str, _HealthReport, Instance] = GroupCommit(
            self._commit_health_reports
        )

    # --- plumbing -----------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self.clock()
        if now.tzinfo is None:
            raise ValueError("the service clock must return timezone-aware datetimes")
        return now.astimezone(UTC)

    async def _cached(self, kind: str, proxy_id: str, load: Callable[[Reader], Awaitable[T]]) -> T:
        hit, value = self._cache.get(kind, proxy_id)
        if hit:
            return value  # type: ignore[no-any-return]
        generation = self._cache.generation(proxy_id)
        async with self.store.read() as reader:
            loaded = await load(reader)
        self._cache.put(kind, proxy_id, loaded, generation)
        return loaded

    @contextlib.asynccontextmanager
    async def _write(
        self, proxy_id: str, *, lock: bool = True
    ) -> AsyncIterator[tuple[UnitOfWork, RedundancyStatus | None]]:
        """One locked write transaction for ``proxy_id``; notifies ``on_change`` after commit.

        ``lock=False``: the caller's first statement locks the proxy itself (and yields None).
        """
        self._cache.invalidate(proxy_id)
        async with self.store.write() as unit:
            locked = await unit.lock_proxy(proxy_id) if lock else None
            yield unit, locked
        self._cache.invalidate(proxy_id)
        if self.on_change is not None and (unit.notifications or not unit.quiet):
            try:
                self.on_change(proxy_id, tuple(unit.notifications))
            except Exception:  # a listener must never undo or fail a committed change
                logging.getLogger("proxy_failover.service").exception("on_change listener failed")

    async def _proxy_of_instance(self, instance_id: str) -> str:
        """The proxy an instance belongs to (an id's proxy never changes), or 004."""
        proxy_id = self._instance_proxy.get(instance_id)
        if proxy_id is not None:
            return proxy_id
        async with self.store.read() as reader:
            instance = await reader.get_instance(instance_id)
        if instance is None:
            raise self._instance_not_found(instance_id)
        self._instance_proxy[instance_id] = instance.proxy_id
        return instance.proxy_id

    @staticmethod
    def _instance_not_found(instance_id: str) -> NotFound:
        return NotFound(
            f"Proxy instance {instance_id} not found",
            ErrorCode.INSTANCE_NOT_FOUND,
            {"instanceId": instance_id},
        )

    @staticmethod
    def _config_not_found(proxy_id: str) -> NotFound:
        return NotFound(
            f"Failover configuration for proxy {proxy_id} not found",
            ErrorCode.CONFIG_NOT_FOUND,
            {"proxyId": proxy_id},
        )

    @staticmethod
    def _event_not_found(event_id: str) -> NotFound:
        return NotFound(
            f"Failover event {event_id} not found", ErrorCode.EVENT_NOT_FOUND, {"eventId": event_id}
        )

    async def _locked_instance(self, unit: UnitOfWork, instance_id: str) -> Instance:
        instance = await unit.get_instance(instance_id)
        if instance is None:
            self._instance_proxy.pop(instance_id, None)
            raise self._instance_not_found(instance_id)
        return instance

    async def _lock_with_instance(
        self, unit: UnitOfWork, proxy_id: str, instance_id: str
    ) -> tuple[RedundancyStatus, list[Instance], Instance]:
        """Lock the proxy and load its instances and the one asked for, in one statement (004 if
        the instance or its proxy is gone). For units opened with ``_write(..., lock=False)``."""
        locked, instances = await unit.lock_proxy_with_instances(proxy_id)
        found = next((i for i in instances if i.id == instance_id), None)
        if locked is None or found is None:
            self._instance_proxy.pop(instance_id, None)
            raise self._instance_not_found(instance_id)
        return locked, instances, found

    async def _snapshot(
        self, reader: Reader, proxy_id: str, status: RedundancyStatus
    ) -> ProxySnapshot:
        config = await reader.get_config(proxy_id)
        if config is None:
            raise self._config_not_found(proxy_id)
        instances = strategies.in_preference_order(await reader.list_instances(proxy_id))
        return ProxySnapshot(config, instances, status, await reader.open_switch_event(proxy_id))

    async def _ensure_proxy(
        self,
        unit: UnitOfWork,
        proxy_id: str,
        user_id: str,
        locked: RedundancyStatus | None,
        data: Mapping[str, Any],
        now: datetime,
    ) -> tuple[FailoverConfig, RedundancyStatus, bool]:
        """The proxy's config and locked redundancy row, creating both (owner ``user_id``) if new.

        Returns (config, redundancy, created). ``data`` is the config body for a new proxy.
        """
        if locked is None:
            config = validation.build_config(proxy_id, user_id, data, None, now)
            config = dataclasses.replace(
                config,
                id=new_id(),
                proxy_id=proxy_id,
                user_id=user_id,
                created_at=now,
                updated_at=now,
            )
            assessment = core_redundancy.assess((), None)
            status = RedundancyStatus(
                proxy_id=proxy_id,
                total_instances=assessment.total_instances,
                healthy_instances=assessment.healthy_instances,
                unhealthy_instances=assessment.unhealthy_instances,
                redundancy_level=assessment.redundancy_level,
                is_degraded=assessment.is_degraded,
                updated_at=now,
            )
            if await unit.create_proxy(config, status):
                return config, status, True
            # Another writer created it between our lock attempt and insert: lock theirs.
            locked = await unit.lock_proxy(proxy_id)
            assert locked is not None
        config_found = await unit.get_config(proxy_id)
        assert config_found is not None
        return config_found, locked, False

    async def _recompute(
        self,
        unit: UnitOfWork,
        before: RedundancyStatus,
        now: datetime,
        *,
        move_to: str | _Keep | None = _Keep.POINTER,
        epoch: int | None = None,
        failover_reason: str | None = None,
        instances: Sequence[Instance] | None = None,
    ) -> RedundancyStatus:
        """Recompute redundancy from the instances (clearing ``overridden``); move the pointer.

        ``instances`` is the proxy's current instances when the caller already has them. The row
        is only written when something in it changed (a steady stream of identical health reports
        costs no redundancy write).
        """
        proxy_id = before.proxy_id
        if instances is None:
            instances = await unit.list_instances(proxy_id)
        instances = strategies.in_preference_order(instances)
        active_id = before.active_instance_id if move_to is _Keep.POINTER else move_to
        if active_id is not None and all(i.id != active_id for i in instances):
            active_id = None
        assessment = core_redundancy.assess(instances, active_id)
        moved = active_id != before.active_instance_id
        after = RedundancyStatus(
            proxy_id=proxy_id,
            total_instances=assessment.total_instances,
            healthy_instances=assessment.healthy_instances,
            unhealthy_instances=assessment.unhealthy_instances,
            active_instance_id=active_id,
            backup_instance_ids=assessment.backup_instance_ids,
            last_failover_at=now if failover_reason is not None else before.last_failover_at,
            last_failover_reason=(
                failover_reason if failover_reason is not None else before.last_failover_reason
            ),
            redundancy_level=assessment.redundancy_level,
            is_degraded=assessment.is_degraded,
            epoch=epoch if epoch is not None else before.epoch,
            overridden=False,
            updated_at=now,
        )
        if dataclasses.replace(after, updated_at=before.updated_at) == before:
            return before
        await unit.save_redundancy(after)
        if moved or before.overridden:
            await unit.mark_active(proxy_id, active_id)
        if after.is_degraded != before.is_degraded:
            unit.notify(
                Notification(
                    REDUNDANCY_DEGRADED if after.is_degraded else REDUNDANCY_RESTORED,
                    proxy_id,
                    after.epoch,
                    now,
                    {
                        "activeInstanceId": after.active_instance_id,
                        "totalInstances": after.total_instances,
                        "healthyInstances": after.healthy_instances,
                        "unhealthyInstances": after.unhealthy_instances,
                        "redundancyLevel": after.redundancy_level.value,
                        "isDegraded": after.is_degraded,
                    },
                )
            )
        return after

    @staticmethod
    def _health_notifications(
        before: Instance, after: Instance, epoch: int, now: datetime
    ) -> list[Notification]:
        if after.health_status == before.health_status:
            return []
        kinds = {HealthStatus.HEALTHY: INSTANCE_HEALTHY, HealthStatus.UNHEALTHY: INSTANCE_UNHEALTHY}
        kind = kinds.get(after.health_status)
        if kind is None:
            return []
        return [
            Notification(
                kind,
                after.proxy_id,
                epoch,
                now,
                {
                    "instanceId": after.id,
                    "instanceName": after.instance_name,
                    "previousStatus": before.health_status.value,
                    "status": after.health_status.value,
                    "consecutiveFailures": after.consecutive_failures,
                    "consecutiveSuccesses": after.consecutive_successes,
                    "lastError": after.last_error,
                },
            )
        ]

    @staticmethod
    def _with_health(instance: Instance, state: Any, now: datetime, **changes: Any) -> Instance:
        changed = state.status != instance.health_status
        return dataclasses.replace(
            instance,
            health_status=state.status,
            consecutive_failures=state.consecutive_failures,
            consecutive_successes=state.consecutive_successes,
            status_changed_at=now if changed else instance.status_changed_at,
            updated_at=now,
            **changes,
        )

    @staticmethod
    def _is_repeat(before: Instance, after: Instance) -> bool:
        """A report that leaves every decision input as it was (same status, checked before).

        Redundancy is then unchanged too (it follows from the statuses) and no event moved, so
        no listener has anything to act on; the engine's periodic evaluation still sees the
        new counters and metrics.
        """
        return (
            after.health_status is before.health_status
            and after.admin_state is before.admin_state
            and before.last_health_check is not None
        )

    @staticmethod
    def _with_sample(instance: Instance, sample: MetricSample | None) -> Instance:
        """Metric samples set activeConnections and overwrite average latency and error rate."""
        if sample is None:
            return instance
        changes: dict[str, Any] = {}
        if sample.connection_count is not None:
            changes["active_connections"] = sample.connection_count
        if sample.average_latency_ms is not None:
            changes["average_latency_ms"] = sample.average_latency_ms
        if sample.error_rate is not None:
            changes["error_rate"] = sample.error_rate
        return dataclasses.replace(instance, **changes) if changes else instance

    async def _after_health_change(
        self,
        unit: UnitOfWork,
        before: Instance,
        after: Instance,
        now: datetime,
        status: RedundancyStatus,
        instances: Sequence[Instance],
        *,
        record_recovery: bool,
    ) -> RedundancyStatus:
        """Recompute redundancy, notify health transitions and close/record recovery.

        ``instances`` is the proxy's instances as loaded in this unit of work, before the change.
        Returns the redundancy row as it now is (for the next change in the same unit).
        """
        current = [after if i.id == after.id else i for i in instances]
        recomputed = await self._recompute(unit, status, now, instances=current)
        unit.notify(*self._health_notifications(before, after, recomputed.epoch, now))
        recovered = (
            before.health_status is HealthStatus.UNHEALTHY
            and after.health_status is HealthStatus.HEALTHY
        )
        if not recovered:
            return recomputed
        config = await unit.get_config(after.proxy_id)
        owner = config.user_id if config is not None else after.user_id
        open_recovery = await unit.open_recovery_event(after.id)
        if open_recovery is not None:
            await unit.save_event(
                dataclasses.replace(
                    open_recovery,
                    status=EventStatus.COMPLETED,
                    completed_at=now,
                    duration_ms=_ms_between(open_recovery.created_at, now),
                )
            )
        elif record_recovery:
            await unit.insert_event(
                FailoverEvent(
                    id=new_id(),
                    proxy_id=after.proxy_id,
                    user_id=owner,
                    event_type=EventType.RECOVERY,
                    source_instance_id=None,
                    target_instance_id=after.id,
                    reason=(
                        f"Instance {after.instance_name} recovered after "
                        f"{after.consecutive_successes} consecutive successful checks"
                    ),
                    status=EventStatus.COMPLETED,
                    triggered_by="system",
                    epoch=recomputed.epoch,
                    created_at=now,
                    duration_ms=0,
                    completed_at=now,
                )
            )
        return recomputed

    # --- the seed's methods -------------------------------------------------------------------

    async def create_failover_configuration(
        self, proxy_id: str, user_id: str, config: Mapping[str, Any]
    ) -> FailoverConfig:
        """Create the proxy's config (caller becomes owner) or change only the given fields."""
        proxy_id = validation.validate_proxy_id(proxy_id)
        user = _require_text(user_id, "userId")
        assert user is not None
        if config is None:
            config = {}
        if not isinstance(config, Mapping):
            raise InvalidInput("config must be an object", details={"field": "config"})
        now = self._now()
        async with self._write(proxy_id) as (unit, locked):
            existing, _status, created = await self._ensure_proxy(
                unit, proxy_id, user, locked, config, now
            )
            if created:
                self.logger.info("proxy %s: configuration created by %s", proxy_id, user)
                return existing
            updated = validation.build_config(proxy_id, user, config, existing, now)
            updated = dataclasses.replace(
                updated,
                id=existing.id,
                proxy_id=proxy_id,
                user_id=existing.user_id,
                created_at=existing.created_at,
                updated_at=now,
            )
            await unit.save_config(updated)
            return updated

    async def get_failover_configuration(self, proxy_id: str) -> FailoverConfig | None:
        if not isinstance(proxy_id, str):
            return None

        async def load(reader: Reader) -> FailoverConfig | None:
            return await reader.get_config(proxy_id)

        return await self._cached("config", proxy_id, load)

    async def register_proxy_instance(
        self, proxy_id: str, user_id: str, instance_data: Mapping[str, Any]
    ) -> Instance:
        """Add an instance (name unique per proxy, 005); an unknown proxy gets a default config."""
        proxy_id = validation.validate_proxy_id(proxy_id)
        user = _require_text(user_id, "userId")
        assert user is not None
        if not isinstance(instance_data, Mapping):
            raise InvalidInput("instanceData must be an object", details={"field": "instanceData"})
        now = self._now()
        instance = validation.build_instance(proxy_id, user, new_id(), instance_data, now)
        instance = dataclasses.replace(
            instance,
            proxy_id=proxy_id,
            user_id=user,
            is_active=False,
            created_at=now,
            updated_at=now,
        )
        async with self._write(proxy_id) as (unit, locked):
            _config, status, _created = await self._ensure_proxy(
                unit, proxy_id, user, locked, {}, now
            )
            existing = await unit.list_instances(proxy_id)
            if any(i.instance_name == instance.instance_name for i in existing):
                raise Conflict(
                    f"An instance named {instance.instance_name!r} already exists for proxy "
                    f"{proxy_id}",
                    ErrorCode.DUPLICATE_INSTANCE_NAME,
                    {"instanceName": instance.instance_name},
                )
            await unit.insert_instance(instance)
            await self._recompute(unit, status, now)
        self._instance_proxy[instance.id] = proxy_id
        self.logger.info("proxy %s: instance %s registered", proxy_id, instance.instance_name)
        return instance

    async def get_proxy_instances(self, proxy_id: str) -> list[Instance]:
        """The proxy's instances in preference order (empty for an unknown proxy)."""
        if not isinstance(proxy_id, str):
            return []

        async def load(reader: Reader) -> tuple[Instance, ...]:
            return strategies.in_preference_order(await reader.list_instances(proxy_id))

        return list(await self._cached("instances", proxy_id, load))

    async def update_instance_health(
        self, instance_id: str, health_status: str, metrics: Mapping[str, Any] | None = None
    ) -> Instance:
        """An authoritative health report (SPEC §4); an optional metrics sample is stored too.

        An instance in maintenance keeps reading ``unknown``: the report's sample is stored and
        ``lastHealthCheck`` moves, but its status does not.
        """
        status = validation.parse_health_status(health_status)
        sample = validation.parse_metric_sample(metrics, require_one=False)
        proxy_id = await self._proxy_of_instance(instance_id)
        # Reports waiting for the same lock share one transaction (see ``store.group_commit``):
        # SQLite has a single writer, so all proxies wait together; PostgreSQL locks per proxy.
        key = "" if self.store.dialect_name == "sqlite" else proxy_id
        return await self.health_reports.submit(
            key, _HealthReport(proxy_id, instance_id, status, sample)
        )

    async def _commit_health_reports(
        self, key: str, take: Callable[[], list[_HealthReport]]
    ) -> list[Instance | Exception]:
        """One transaction for the health reports queued under ``key``, in arrival order.

        Proxies are locked in one order (sorted ids), so batches never deadlock each other; on
        PostgreSQL ``key`` is the one proxy, locked before the batch is taken, so reports that
        arrive while it waits for the row lock join it.
        """
        touched: set[str] = set()
        try:
            async with self.store.write() as unit:
                first = await unit.lock_proxy_with_instances(key) if key else None
                reports = take()
                now = self._now()
                outcomes: list[Instance | Exception] = [
                    self._instance_not_found(r.instance_id) for r in reports
                ]
                by_proxy: dict[str, list[int]] = {}
                for index, report in enumerate(reports):
                    by_proxy.setdefault(report.proxy_id, []).append(index)
                loud: set[str] = set()
                for proxy_id in sorted(by_proxy):
                    touched.add(proxy_id)
                    self._cache.invalidate(proxy_id)
                    indexes = by_proxy[proxy_id]
                    loaded = (
                        first
                        if first is not None and proxy_id == key
                        else await unit.lock_proxy_with_instances(proxy_id)
                    )
                    applied, quiet = await self._apply_health_reports(
                        unit, loaded, [reports[i] for i in indexes], now
                    )
                    for index, outcome in zip(indexes, applied, strict=True):
                        outcomes[index] = outcome
                    if not quiet:
                        loud.add(proxy_id)
        finally:
            for proxy_id in touched:
                self._cache.invalidate(proxy_id)
        for proxy_id in sorted(touched):
            notifications = tuple(n for n in unit.notifications if n.proxy_id == proxy_id)
            if notifications or proxy_id in loud:
                self._notify_change(proxy_id, notifications)
        return outcomes

    async def _apply_health_reports(
        self,
        unit: UnitOfWork,
        loaded: tuple[RedundancyStatus | None, list[Instance]],
        reports: Sequence[_HealthReport],
        now: datetime,
    ) -> tuple[list[Instance | Exception], bool]:
        """Apply one proxy's reports in order under its lock; (outcomes, all were repeats).

        Each report sees the state the previous one left; each instance row is written once, at
        the end, with its last state (the redundancy row and events as each report moves them).
        """
        locked, instances = loaded
        current = {instance.id: instance for instance in instances}
        outcomes: list[Instance | Exception] = []
        changed: dict[str, None] = {}
        quiet = True
        for report in reports:
            before = current.get(report.instance_id)
            if locked is None or before is None:
                self._instance_proxy.pop(report.instance_id, None)
                outcomes.append(self._instance_not_found(report.instance_id))
                continue
            state = (
                before.health
                if before.admin_state is AdminState.MAINTENANCE
                else core_health.report(before.health, report.status)
            )
            after = self._with_sample(
                self._with_health(before, state, now, last_health_check=now), report.sample
            )
            if report.sample is not None:
                await unit.insert_metric(
                    StoredMetricSample(
                        new_id(), after.id, after.proxy_id, after.user_id, report.sample, now
                    )
                )
            recomputed = await self._after_health_change(
                unit, before, after, now, locked, list(current.values()), record_recovery=False
            )
            current[after.id] = after
            changed[after.id] = None
            if recomputed.active_instance_id != locked.active_instance_id or locked.overridden:
                # _recompute moved the is_active mirror in the database: keep ours in step.
                active = recomputed.active_instance_id
                current = {
                    i: dataclasses.replace(v, is_active=i == active)
                    if v.is_active != (i == active)
                    else v
                    for i, v in current.items()
                }
            locked = recomputed
            quiet = quiet and self._is_repeat(before, after)
            outcomes.append(after)
        for instance_id in changed:
            await unit.save_instance(current[instance_id])
        return outcomes, quiet

    async def record_instance_metrics(
        self, instance_id: str, proxy_id: str, user_id: str, metrics: Mapping[str, Any]
    ) -> StoredMetricSample:
        """Store one metric sample (007 when empty or invalid) for an instance of ``proxy_id``."""
        sample = validation.parse_metric_sample(metrics, require_one=True)
        assert sample is not None
        user = _require_text(user_id, "userId")
        assert user is not None
        if not isinstance(proxy_id, str):
            raise InvalidInput("proxyId is required", details={"field": "proxyId"})
        owner_proxy = await self._proxy_of_instance(instance_id)
        if owner_proxy != proxy_id:
            raise self._instance_not_found(instance_id)
        now = self._now()
        stored = StoredMetricSample(new_id(), instance_id, proxy_id, user, sample, now)
        async with self._write(proxy_id) as (unit, _locked):
            before = await self._locked_instance(unit, instance_id)
            after = self._with_sample(before, sample)
            if after != before:
                await unit.save_instance(dataclasses.replace(after, updated_at=now))
            await unit.insert_metric(stored)
        return stored

    async def evaluate_failover(self, proxy_id: str, user_id: str | None = None) -> Evaluation:
        """Side-effect free: is a failover due, from where to where, and why (002 if no proxy)."""
        snapshot = await self.load_snapshot(proxy_id)
        return core_failover.evaluate(snapshot, self._now())

    async def execute_failover(
        self,
        proxy_id: str,
        user_id: str,
        source_id: str | None,
        target_id: str,
        reason: str | None = None,
    ) -> FailoverEvent:
        """Switch the active instance: a compare-and-swap on the pointer, in one transaction.

        Checks 002, 004, 011, 010, 009 against the locked state; records the event
        ``in_progress``, moves the pointer, bumps the epoch and recomputes redundancy.
        """
        if not isinstance(proxy_id, str) or not proxy_id:
            raise InvalidInput("proxyId is required", details={"field": "proxyId"})
        user = _require_text(user_id, "userId")
        target = _require_text(target_id, "targetInstanceId")
        source = _require_text(source_id, "sourceInstanceId", optional=True)
        if reason is not None and not isinstance(reason, str):
            raise InvalidInput("reason must be a string", details={"field": "reason"})
        assert user is not None
        assert target is not None
        why = reason if reason and reason.strip() else DEFAULT_REASON
        now = self._now()
        async with self._write(proxy_id) as (unit, locked):
            if locked is None:
                raise self._config_not_found(proxy_id)
            snapshot = await self._snapshot(unit, proxy_id, locked)
            event_type = core_failover.check_execute(snapshot, source, target)
            event = FailoverEvent(
                id=new_id(),
                proxy_id=proxy_id,
                user_id=user,
                event_type=event_type,
                source_instance_id=source,
                target_instance_id=target,
                reason=why,
                status=EventStatus.IN_PROGRESS,
                triggered_by=user,
                epoch=core_redundancy.next_epoch(locked.epoch),
                created_at=now,
            )
            await unit.insert_event(event)
            await self._recompute(
                unit, locked, now, move_to=target, epoch=event.epoch, failover_reason=why
            )
            unit.notify(
                Notification(FAILOVER_STARTED, proxy_id, event.epoch, now, _event_data(event))
            )
        self.logger.info(
            "proxy %s: %s %s -> %s started by %s (epoch %d)",
            proxy_id,
            event_type.value,
            source,
            target,
            user,
            event.epoch,
        )
        return event

    async def complete_failover_event(
        self,
        event_id: str,
        status: str,
        error_message: str | None = None,
        duration_ms: int | None = None,
    ) -> FailoverEvent:
        """Close an open event once as completed or failed (001, 012, 013); pointer unchanged."""
        final = _parse_close_status(status)
        if error_message is not None and not isinstance(error_message, str):
            raise InvalidInput("errorMessage must be a string", details={"field": "errorMessage"})
        if duration_ms is not None and (
            isinstance(duration_ms, bool) or not isinstance(duration_ms, int) or duration_ms < 0
        ):
            raise InvalidInput(
                "durationMs must be an integer >= 0", details={"field": "durationMs"}
            )
        return await self._close_event(event_id, final, error_message, duration_ms, None)

    async def _close_event(
        self,
        event_id: str,
        final: EventStatus,
        error_message: str | None,
        duration_ms: int | None,
        only_type: EventType | None,
    ) -> FailoverEvent:
        async with self.store.read() as reader:
            found = await reader.get_event(event_id)
        if found is None or (only_type is not None and found.event_type is not only_type):
            raise self._event_not_found(event_id)
        now = self._now()
        async with self._write(found.proxy_id) as (unit, locked):
            event = await unit.get_event(event_id)
            if event is None:
                raise self._event_not_found(event_id)
            if not event.status.is_open:
                raise Conflict(
                    f"Failover event {event_id} is already {event.status.value}",
                    ErrorCode.EVENT_ALREADY_CLOSED,
                    {"eventId": event_id, "status": event.status.value},
                )
            closed = dataclasses.replace(
                event,
                status=final,
                error_message=error_message,
                duration_ms=(
                    duration_ms if duration_ms is not None else _ms_between(event.created_at, now)
                ),
                completed_at=now,
            )
            await unit.save_event(closed)
            epoch = locked.epoch if locked is not None else closed.epoch
            if event.event_type in SWITCHING_EVENT_TYPES:
                kind = FAILOVER_COMPLETED if final is EventStatus.COMPLETED else FAILOVER_FAILED
                unit.notify(Notification(kind, closed.proxy_id, epoch, now, _event_data(closed)))
            elif final is EventStatus.FAILED:
                unit.notify(
                    Notification(
                        INSTANCE_RECOVERY_FAILED, closed.proxy_id, epoch, now, _event_data(closed)
                    )
                )
        return closed

    async def get_redundancy_status(self, proxy_id: str) -> RedundancyStatus | None:
        if not isinstance(proxy_id, str):
            return None

        async def load(reader: Reader) -> RedundancyStatus | None:
            return await reader.get_redundancy(proxy_id)

        return await self._cached("redundancy", proxy_id, load)

    async def update_redundancy_status(
        self, proxy_id: str, user_id: str, status_data: Mapping[str, Any]
    ) -> RedundancyStatus:
        """The seed's override (SPEC §7): stored as given, ``overridden`` until the next recompute.

        It never moves the active pointer or the epoch (014 when inconsistent).
        """
        if not isinstance(status_data, Mapping):
            raise InvalidInput("redundancy status data is required", details={"field": "body"})
        if not isinstance(proxy_id, str) or not proxy_id:
            raise InvalidInput("proxyId is required", details={"field": "proxyId"})
        now = self._now()
        async with self._write(proxy_id) as (unit, locked):
            if locked is None:
                raise self._config_not_found(proxy_id)
            override = validation.validate_redundancy_override(status_data, locked, now)
            override = dataclasses.replace(
                override,
                proxy_id=proxy_id,
                active_instance_id=locked.active_instance_id,
                epoch=locked.epoch,
                overridden=True,
                updated_at=now,
            )
            await unit.save_redundancy(override)
        return override

    async def get_failover_events(
        self,
        proxy_id: str,
        limit: int = 50,
        *,
        status: EventStatus | None = None,
        event_type: EventType | None = None,
        before: datetime | None = None,
    ) -> list[FailoverEvent]:
        """Newest first by start time; ``limit`` 1-1000 (001); empty for an unknown proxy."""
        limit = _parse_limit(limit)
        try:
            status = EventStatus(status) if status is not None else None
            event_type = EventType(event_type) if event_type is not None else None
        except ValueError as error:
            raise InvalidInput(f"invalid filter: {error}", details={"field": "filter"}) from error
        if before is not None:
            if not isinstance(before, datetime):
                raise InvalidInput("before must be a timestamp", details={"field": "before"})
            before = before.replace(tzinfo=UTC) if before.tzinfo is None else before
        if not isinstance(proxy_id, str):
            return []
        async with self.store.read() as reader:
            return await reader.list_events(
                proxy_id, limit, status=status, event_type=event_type, before=before
            )

    # --- SPEC §7 additions --------------------------------------------------------------------

    async def list_proxies(self, user_id: str | None = None) -> list[ProxySummary]:
        """Every proxy with its redundancy (``user_id`` None = all, else the ones it owns)."""
        async with self.store.read() as reader:
            return await reader.list_proxies(user_id)

    async def get_instance(self, instance_id: str) -> Instance:
        async with self.store.read() as reader:
            instance = await reader.get_instance(instance_id)
        if instance is None:
            raise self._instance_not_found(instance_id)
        return instance

    async def get_event(self, event_id: str) -> FailoverEvent:
        async with self.store.read() as reader:
            event = await reader.get_event(event_id)
        if event is None:
            raise self._event_not_found(event_id)
        return event

    async def update_instance(
        self, instance_id: str, user_id: str, changes: Mapping[str, Any]
    ) -> Instance:
        """PATCH priority, weight, endpoint, recoveryUrl, adminState, metadata.

        Entering maintenance resets health to ``unknown`` (``core.validation``: it is no longer
        probed); the engine moves the active role away from a drained or maintained instance.
        """
        if not isinstance(changes, Mapping):
            raise InvalidInput("changes must be an object", details={"field": "body"})
        proxy_id = await self._proxy_of_instance(instance_id)
        now = self._now()
        async with self._write(proxy_id) as (unit, locked):
            before = await self._locked_instance(unit, instance_id)
            assert locked is not None
            after = validation.apply_instance_patch(before, changes, now)
            after = dataclasses.replace(
                after,
                id=before.id,
                proxy_id=before.proxy_id,
                user_id=before.user_id,
                created_at=before.created_at,
                is_active=before.is_active,
                updated_at=now,
            )
            await unit.save_instance(after)
            await self._recompute(unit, locked, now)
        self.logger.info(
            "proxy %s: instance %s updated by %s", proxy_id, after.instance_name, user_id
        )
        return after

    async def delete_instance(self, instance_id: str, user_id: str) -> None:
        """Remove an instance; the active one first hands its role on (a completed switchover).

        409/009 while a switch is in progress, 409/008 when other instances remain but none is
        eligible. Deleting a proxy's last instance is allowed (decommissioning): the role passes to
        nobody, recorded as a completed switchover with no target and a new epoch.
        """
        proxy_id = await self._proxy_of_instance(instance_id)
        now = self._now()
        async with self._write(proxy_id) as (unit, locked):
            instance = await self._locked_instance(unit, instance_id)
            assert locked is not None
            open_recovery = await unit.open_recovery_event(instance.id)
            if open_recovery is not None:
                await unit.save_event(
                    dataclasses.replace(
                        open_recovery,
                        status=EventStatus.FAILED,
                        error_message="instance deleted",
                        completed_at=now,
                        duration_ms=_ms_between(open_recovery.created_at, now),
                    )
                )
            if locked.active_instance_id != instance.id:
                await unit.delete_instance(instance.id)
                await self._recompute(unit, locked, now)
            else:
                snapshot = await self._snapshot(unit, proxy_id, locked)
                if snapshot.open_switch_event is not None:
                    raise Conflict(
                        f"A {snapshot.open_switch_event.event_type.value} is already in progress "
                        f"for proxy {proxy_id}",
                        ErrorCode.FAILOVER_IN_PROGRESS,
                        {"eventId": snapshot.open_switch_event.id},
                    )
                target = strategies.select_target(
                    snapshot.instances, snapshot.config.failover_strategy, instance.id
                )
                is_last_instance = len(snapshot.instances) == 1
                if target is None and not is_last_instance:
                    raise Conflict(
                        f"Cannot delete active instance {instance.instance_name}: no other "
                        "instance is eligible to take over",
                        ErrorCode.NO_ELIGIBLE_TARGET,
                        {"instanceId": instance.id},
                    )
                # Decommissioning a proxy's last instance leaves it with no active instance; the
                # hand-over to nobody is still recorded and fenced (epoch bump) like any other.
                target_id = target.id if target is not None else None
                why = f"Active instance {instance.instance_name} deleted" + (
                    " (last instance: no active instance left)" if target is None else ""
                )
                event = FailoverEvent(
                    id=new_id(),
                    proxy_id=proxy_id,
                    user_id=user_id,
                    event_type=EventType.SWITCHOVER,
                    source_instance_id=instance.id,
                    target_instance_id=target_id,
                    reason=why,
                    status=EventStatus.COMPLETED,
                    triggered_by=user_id,
                    epoch=core_redundancy.next_epoch(locked.epoch),
                    created_at=now,
                    duration_ms=0,
                    completed_at=now,
                )
                await unit.insert_event(event)
                await unit.delete_instance(instance.id)
                await self._recompute(
                    unit, locked, now, move_to=target_id, epoch=event.epoch, failover_reason=why
                )
                unit.notify(
                    Notification(FAILOVER_COMPLETED, proxy_id, event.epoch, now, _event_data(event))
                )
        self._instance_proxy.pop(instance_id, None)
        self.logger.info(
            "proxy %s: instance %s deleted by %s", proxy_id, instance.instance_name, user_id
        )

    async def record_check_result(self, instance_id: str, result: CheckResult) -> Instance:
        """One probe/external check through the rise/fall state machine, with request counters.

        An instance in maintenance is not health-checked: its results are ignored.
        """
        (after,) = await self.record_check_results([(instance_id, result)])
        if after is None:
            raise self._instance_not_found(instance_id)
        return after

    async def record_check_results(
        self, results: Sequence[tuple[str, CheckResult]]
    ) -> list[Instance | None]:
        """Many check results (the engine's probes) in order, each as ``record_check_result`` does.

        One write transaction per proxy, and one for the whole batch on SQLite (a single writer
        anyway): at thousands of probes per second, commits and not the state machine are the
        cost. Each item's answer is the instance after its result, or None when the instance is
        gone (which fails no other item). ``on_change`` is called once per proxy after commit.
        """
        for _, result in results:
            if not isinstance(result, CheckResult):
                raise InvalidInput("a check result is required", details={"field": "body"})
        answers: list[Instance | None] = [None] * len(results)
        by_proxy = await self._indexes_by_proxy(results)
        if not by_proxy:
            return answers
        now = self._now()
        groups = sorted(by_proxy.items())  # one lock order: batches never deadlock each other
        batches = [groups] if self.store.dialect_name == "sqlite" else [[g] for g in groups]
        for batch in batches:
            applied: list[str] = []
            for proxy_id, _ in batch:
                self._cache.invalidate(proxy_id)
            async with self.store.write() as unit:
                for proxy_id, indexes in batch:
                    items = [results[i] for i in indexes]
                    for index, after in zip(
                        indexes, await self._apply_checks(unit, proxy_id, items, now), strict=True
                    ):
                        answers[index] = after
                    if any(answers[i] is not None for i in indexes):
                        applied.append(proxy_id)
            for proxy_id, _ in batch:
                self._cache.invalidate(proxy_id)
            self._announce(unit, applied)
        return answers

    async def record_probe_results(
        self, results: Sequence[tuple[str, CheckResult]]
    ) -> list[HealthState | None]:
        """The engine's form of ``record_check_results``: each item's health afterwards (None when
        the instance is gone), and far cheaper for the common case.

        A success on a steadily healthy instance (see ``UnitOfWork.routine_states``) moves only
        counters and timestamps: those are applied by one executemany, without loading the
        instance; everything else goes through the state machine as ``record_check_results``
        does, in the same transaction. Both end in exactly the same rows.
        """
        for _, result in results:
            if not isinstance(result, CheckResult):
                raise InvalidInput("a check result is required", details={"field": "body"})
        answers: list[HealthState | None] = [None] * len(results)
        by_proxy = await self._indexes_by_proxy(results)
        if not by_proxy:
            return answers
        now = self._now()
        # One transaction for the whole batch on both databases: the proxies are locked in one
        # order (sorted, ``lock_proxies``), so it never deadlocks with other writers, which
        # lock one proxy each; per-proxy transactions made the engine wait one round trip per
        # proxy before it could schedule those probes again.
        batch = sorted(by_proxy.items())
        seen: dict[str, int] = {}
        for instance_id, _ in results:
            seen[instance_id] = seen.get(instance_id, 0) + 1
        loud: list[str] = []
        for proxy_id, _ in batch:
            self._cache.invalidate(proxy_id)
        async with self.store.write() as unit:
            await unit.lock_proxies([proxy_id for proxy_id, _ in batch])
            candidates = [
                results[i][0]
                for _, indexes in batch
                for i in indexes
                if results[i][1].success and seen[results[i][0]] == 1
            ]
            states = await unit.routine_states(candidates) if candidates else {}
            routine: list[tuple[str, float | None]] = []
            for proxy_id, indexes in batch:
                rest: list[int] = []
                for i in indexes:
                    instance_id, result = results[i]
                    state = states.get(instance_id) if result.success else None
                    if (
                        state is not None
                        and state[0]
                        and seen[instance_id] == 1
                        and not core_health.is_out_of_date(result.observed_at, state[4])
                    ):
                        routine.append((instance_id, result.latency_ms))
                        answers[i] = HealthState(state[1], 0, state[3] + 1)
                    else:
                        rest.append(i)
                if rest:
                    items = [results[i] for i in rest]
                    applied = await self._apply_checks(unit, proxy_id, items, now)
                    for i, after in zip(rest, applied, strict=True):
                        answers[i] = None if after is None else after.health
                    loud.append(proxy_id)
            await unit.record_routine_successes(routine, now)
        for proxy_id, _ in batch:
            self._cache.invalidate(proxy_id)
        self._announce(unit, loud)
        return answers

    async def _indexes_by_proxy(
        self, results: Sequence[tuple[str, CheckResult]]
    ) -> dict[str, list[int]]:
        """The positions of ``results`` by the proxy of their instance (gone instances left out)."""
        by_proxy: dict[str, list[int]] = {}
        for index, (instance_id, _) in enumerate(results):
            try:
                proxy_id = await self._proxy_of_instance(instance_id)
            except NotFound:
                continue
            by_proxy.setdefault(proxy_id, []).append(index)
        return by_proxy

    def _announce(self, unit: UnitOfWork, proxy_ids: Iterable[str]) -> None:
        """After a commit that changed several proxies: tell ``on_change`` of each, with its own
        notifications."""
        for proxy_id in proxy_ids:
            self._notify_change(
                proxy_id, tuple(n for n in unit.notifications if n.proxy_id == proxy_id)
            )

    def _notify_change(self, proxy_id: str, notifications: tuple[Notification, ...]) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(proxy_id, notifications)
        except Exception:  # a listener must never undo or fail a committed change
            logging.getLogger("proxy_failover.service").exception("on_change listener failed")

    async def _apply_checks(
        self,
        unit: UnitOfWork,
        proxy_id: str,
        items: Sequence[tuple[str, CheckResult]],
        now: datetime,
    ) -> list[Instance | None]:
        """Lock ``proxy_id`` and apply its check results in order (core of one result and many).

        Only the instances checked are loaded; the proxy's other instances only when a result
        moves a status (or the redundancy row was overridden): otherwise redundancy, events and
        notifications cannot change, and loading 100 instances for one routine success was most
        of a probe's cost.
        """
        locked = await unit.lock_proxy(proxy_id)
        current: dict[str, Instance] = {}
        everyone: dict[str, Instance] | None = None
        wanted = dict.fromkeys(i for i, _ in items)
        if locked is not None and len(wanted) > _FEW_CHECKS:  # one query beats many lookups
            everyone = {i.id: i for i in await unit.list_instances(proxy_id)}
            current = {i: everyone[i] for i in wanted if i in everyone}
        elif locked is not None:
            for instance_id in wanted:
                found = await unit.get_instance(instance_id)
                if found is not None and found.proxy_id == proxy_id:
                    current[instance_id] = found
        answers: list[Instance | None] = []
        config: FailoverConfig | None = None
        for instance_id, result in items:
            before = current.get(instance_id)
            if locked is None or before is None:
                self._instance_proxy.pop(instance_id, None)
                answers.append(None)
                continue
            if before.admin_state is AdminState.MAINTENANCE or core_health.is_out_of_date(
                result.observed_at, before.status_changed_at
            ):
                answers.append(before)
                continue
            if config is None:
                config = await unit.get_config(proxy_id)
                assert config is not None
            state = core_health.observe(before.health, result.success, HealthRules.of(config))
            total = before.total_requests + 1
            successful = before.successful_requests + (1 if result.success else 0)
            failed = before.failed_requests + (0 if result.success else 1)
            average = before.average_latency_ms
            if result.latency_ms is not None:
                average = (
                    result.latency_ms
                    if average is None
                    else average + (result.latency_ms - average) / total
                )
            after = self._with_health(
                before,
                state,
                now,
                last_health_check=now,
                last_error=None if result.success else (result.error or "check failed"),
                last_latency_ms=result.latency_ms,
                total_requests=total,
                successful_requests=successful,
                failed_requests=failed,
                average_latency_ms=average,
                error_rate=failed / total,
            )
            await unit.save_instance(after)
            current[instance_id] = after
            if after.health_status is not before.health_status or locked.overridden:
                if everyone is None:
                    everyone = {i.id: i for i in await unit.list_instances(proxy_id)}
                everyone.update(current)
                locked = await self._after_health_change(
                    unit, before, after, now, locked, list(everyone.values()), record_recovery=True
                )
            answers.append(after)
        return answers

    async def get_instance_metrics(
        self, instance_id: str, limit: int = 100
    ) -> list[StoredMetricSample]:
        """The instance's metric samples, newest first (004; limit 1-1000 else 001)."""
        limit = _parse_limit(limit)
        async with self.store.read() as reader:
            if await reader.get_instance(instance_id) is None:
                raise self._instance_not_found(instance_id)
            return await reader.list_metrics(instance_id, limit)

    async def get_route(self, proxy_id: str) -> Route:
        """The instance a client should use now: the active one, or a load-balanced pick (008)."""
        config = await self.get_failover_configuration(proxy_id)
        if config is None:
            raise self._config_not_found(proxy_id)
        instances = await self.get_proxy_instances(proxy_id)
        status = await self.get_redundancy_status(proxy_id)
        active_id = status.active_instance_id if status is not None else None
        epoch = status.epoch if status is not None else 0
        if config.enable_load_balancing:
            cursor = self._route_cursors.get(proxy_id, strategies.RouteCursor())
            chosen, cursor = strategies.pick_route(
                instances, config.load_balancing_algorithm, cursor
            )
            if chosen is not None:
                self._route_cursors[proxy_id] = cursor
        else:
            chosen = next((i for i in instances if i.id == active_id), None)
        if chosen is None:
            raise Conflict(
                f"No eligible instance to route proxy {proxy_id} to",
                ErrorCode.NO_ELIGIBLE_TARGET,
                {"proxyId": proxy_id},
            )
        return Route(
            proxy_id=proxy_id,
            instance_id=chosen.id,
            instance_name=chosen.instance_name,
            endpoint=chosen.endpoint,
            is_active=chosen.id == active_id,
            epoch=epoch,
            load_balanced=config.enable_load_balancing,
        )

    async def explain(self, proxy_id: str) -> Explanation:
        snapshot = await self.load_snapshot(proxy_id)
        return core_failover.explain(snapshot, self._now())

    # --- for the engine -----------------------------------------------------------------------

    async def list_proxy_ids(self) -> list[str]:
        async with self.store.read() as reader:
            return await reader.list_proxy_ids()

    async def proxy_versions(self) -> dict[str, int]:
        """Every proxy's change counter: it moves with every committed change of the proxy (any
        process, any replica) except routine probe successes, so an unchanged counter means an
        unchanged snapshot but for probe counters and timestamps (the engine's periodic check)."""
        async with self.store.read() as reader:
            return await reader.proxy_versions()

    async def load_snapshot(self, proxy_id: str) -> ProxySnapshot:
        """One consistent view of a proxy, read in one transaction (002 if it has no config)."""
        if not isinstance(proxy_id, str):
            raise self._config_not_found(str(proxy_id))
        async with self.store.read() as reader:
            status = await reader.get_redundancy(proxy_id)
            if status is None:
                raise self._config_not_found(proxy_id)
            return await self._snapshot(reader, proxy_id, status)

    async def apply_decision(
        self, proxy_id: str, decision: Decision, detected_at: datetime
    ) -> FailoverEvent | None:
        """Apply the engine's decision in one transaction, or None if it no longer holds.

        Compare-and-swap against the locked state: the active pointer must still be the
        decision's source, the target still eligible, an unhealthy/unavailable source still so,
        and automatic failover (failback) still enabled. The event is recorded already
        ``completed`` (``triggeredBy: system``, ``durationMs`` from detection to commit); an open
        manual switch is closed ``failed`` ("superseded by automatic failover").
        """
        if decision.action is DecisionAction.NONE or decision.target_instance_id is None:
            return None
        now = self._now()
        async with self._write(proxy_id) as (unit, locked):
            if locked is None:
                return None
            snapshot = await self._snapshot(unit, proxy_id, locked)
            if not self._decision_holds(snapshot, decision):
                return None
            open_event = snapshot.open_switch_event
            if open_event is not None:
                superseded = dataclasses.replace(
                    open_event,
                    status=EventStatus.FAILED,
                    error_message=SUPERSEDED_MESSAGE,
                    completed_at=now,
                    duration_ms=_ms_between(open_event.created_at, now),
                )
                await unit.save_event(superseded)
                unit.notify(
                    Notification(
                        FAILOVER_FAILED, proxy_id, locked.epoch, now, _event_data(superseded)
                    )
                )
            started = min(detected_at.astimezone(UTC), now)
            event = FailoverEvent(
                id=new_id(),
                proxy_id=proxy_id,
                user_id=snapshot.config.user_id,
                event_type=decision.event_type,
                source_instance_id=locked.active_instance_id,
                target_instance_id=decision.target_instance_id,
                reason=decision.reason,
                status=EventStatus.COMPLETED,
                triggered_by="system",
                epoch=core_redundancy.next_epoch(locked.epoch),
                created_at=started,
                duration_ms=_ms_between(started, now),
                completed_at=now,
            )
            await unit.insert_event(event)
            await self._recompute(
                unit,
                locked,
                now,
                move_to=decision.target_instance_id,
                epoch=event.epoch,
                failover_reason=decision.reason,
            )
            unit.notify(
                Notification(FAILOVER_COMPLETED, proxy_id, event.epoch, now, _event_data(event))
            )
        self.logger.info("proxy %s: %s (epoch %d)", proxy_id, decision.reason, event.epoch)
        return event

    @staticmethod
    def _decision_holds(snapshot: ProxySnapshot, decision: Decision) -> bool:
        config = snapshot.config
        if not config.enable_auto_failover:
            return False
        active = snapshot.active
        active_id = active.id if active is not None else None
        if active_id != decision.source_instance_id:
            return False
        target = next((i for i in snapshot.instances if i.id == decision.target_instance_id), None)
        if target is None or not strategies.is_eligible(target, active_id):
            return False
        if decision.action is DecisionAction.ACTIVATE:
            return active is None
        if decision.action is DecisionAction.FAILBACK:
            return config.enable_auto_failback and snapshot.open_switch_event is None
        # FAILOVER: only away from an active instance that is (still) not healthy-and-enabled.
        return active is None or not (
            active.health_status is HealthStatus.HEALTHY
            and active.admin_state is AdminState.ENABLED
        )

    async def close_stale_events(self) -> list[FailoverEvent]:
        """Close switching events open longer than ``STALE_EVENT_SECONDS`` as failed (timeout)."""
        now = self._now()
        cutoff = now - timedelta(seconds=STALE_EVENT_SECONDS)
        async with self.store.read() as reader:
            stale = await reader.stale_switch_events(cutoff)
        closed: list[FailoverEvent] = []
        for candidate in stale:
            async with self._write(candidate.proxy_id) as (unit, locked):
                event = await unit.get_event(candidate.id)
                if event is None or not event.status.is_open:
                    continue
                done = dataclasses.replace(
                    event,
                    status=EventStatus.FAILED,
                    error_message=STALE_MESSAGE,
                    completed_at=now,
                    duration_ms=_ms_between(event.created_at, now),
                )
                await unit.save_event(done)
                epoch = locked.epoch if locked is not None else event.epoch
                unit.notify(
                    Notification(FAILOVER_FAILED, event.proxy_id, epoch, now, _event_data(done))
                )
            closed.append(done)
            self.logger.warning("proxy %s: event %s timed out", done.proxy_id, done.id)
        return closed

    async def open_recovery_event(self, instance_id: str, reason: str) -> FailoverEvent | None:
        """Open an ``in_progress`` recovery event for an instance; None if one is already open.

        Recovery events do not count for the one-switch-in-progress rule. The service closes it
        ``completed`` itself when the instance turns healthy; the engine closes it ``failed``.
        """
        proxy_id = await self._proxy_of_instance(instance_id)
        now = self._now()
        async with self._write(proxy_id) as (unit, locked):
            instance = await self._locked_instance(unit, instance_id)
            assert locked is not None
            if await unit.open_recovery_event(instance.id) is not None:
                return None
            config = await unit.get_config(proxy_id)
            event = FailoverEvent(
                id=new_id(),
                proxy_id=proxy_id,
                user_id=config.user_id if config is not None else instance.user_id,
                event_type=EventType.RECOVERY,
                source_instance_id=None,
                target_instance_id=instance.id,
                reason=reason or f"Recovering instance {instance.instance_name}",
                status=EventStatus.IN_PROGRESS,
                triggered_by="system",
                epoch=locked.epoch,
                created_at=now,
            )
            await unit.insert_event(event)
        return event

    async def close_recovery_event(
        self, event_id: str, status: EventStatus, error_message: str | None = None
    ) -> FailoverEvent:
        """Close a recovery event (012 missing or not a recovery, 013 already closed)."""
        final = _parse_close_status(status)
        return await self._close_event(event_id, final, error_message, None, EventType.RECOVERY)
