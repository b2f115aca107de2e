"""``ProxyFailoverService``: every method of SPEC §6 (snake_case of the seed's) and §7, each
delegating to the use-case module of its resource with the shared ``ServiceContext``."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from proxy_failover.core.dataplane import DesiredState
from proxy_failover.core.model import (
    CheckResult,
    Decision,
    Evaluation,
    EventStatus,
    EventType,
    Explanation,
    FailoverConfig,
    FailoverEvent,
    HealthState,
    Instance,
    ProxySnapshot,
    ProxySummary,
    RedundancyStatus,
    Route,
    StoredMetricSample,
)
from proxy_failover.core.retention import RetentionPolicy
from proxy_failover.core.webhooks import AuditEntry, Delivery, DeliveryStatus, Subscription
from proxy_failover.service import (
    audit,
    checks,
    configs,
    engine_ops,
    events,
    failover,
    health,
    instances,
    redundancy,
    retention,
    route,
    webhooks,
)
from proxy_failover.service.context import (
    DEFAULT_CACHE_TTL_SECONDS,
    ChangeListener,
    LoggerLike,
    ServiceContext,
    utcnow,
)
from proxy_failover.store import Store
from proxy_failover.store.group_commit import GroupCommit


class ProxyFailoverService:
    """Facade over the store with every method of SPEC §6 (snake_case of the seed's).

    ``clock`` returns timezone-aware UTC now (inject a fake one in tests). ``on_change`` is called
    after each commit with the proxy id and the notifications that commit produced (possibly none):
    the engine uses it to wake up at once (a repeated health report that moves no status wakes
    nobody: see ``health.is_repeat``). Reads of configuration, instances and redundancy are
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
        self._ctx = ServiceContext(
            store,
            logger or logging.getLogger("proxy_failover.service"),
            clock or utcnow,
            on_change,
            cache_ttl_seconds,
        )
        #: Health reports are group-committed: one writer on SQLite, one per proxy on PostgreSQL.
        self.health_reports: health.HealthReports = GroupCommit(
            functools.partial(health.commit_health_reports, self._ctx)
        )

    @property
    def store(self) -> Store:
        return self._ctx.store

    @property
    def cache_ttl_seconds(self) -> float:
        """How stale a cached read may be across processes (0: reads are not cached)."""
        return self._ctx.cache.ttl

    @property
    def logger(self) -> LoggerLike:
        return self._ctx.logger

    @property
    def clock(self) -> Callable[[], datetime]:
        return self._ctx.clock

    @property
    def on_change(self) -> ChangeListener | None:
        """Told after each commit (see the class docstring); may be replaced at any time."""
        return self._ctx.on_change

    @on_change.setter
    def on_change(self, listener: ChangeListener | None) -> None:
        self._ctx.on_change = listener

    @property
    def fails_over_on_health_change(self) -> bool:
        """Whether a health report or check result that makes the active instance unhealthy
        fails over in its own transaction (``serve`` turns it on; see docs/engine.md). Off by
        default: the bare library starts no automatic action (SPEC §6)."""
        return self._ctx.fails_over_on_health_change

    @fails_over_on_health_change.setter
    def fails_over_on_health_change(self, on: bool) -> None:
        self._ctx.fails_over_on_health_change = on

    def forget_cached(self, proxy_id: str) -> None:
        """Another writer of this process (the engine on its own thread and connection pool)
        committed a change of ``proxy_id``: drop the cached reads of it now, not at their TTL."""
        self._ctx.cache.invalidate(proxy_id)

    # --- configurations and redundancy (configs.py, redundancy.py) ---------------------------

    async def create_failover_configuration(
        self, proxy_id: str, user_id: str, config: Mapping[str, Any]
    ) -> FailoverConfig:
        """Create the proxy's config (caller becomes owner) or change only the given fields."""
        return await configs.create_failover_configuration(self._ctx, proxy_id, user_id, config)

    async def get_failover_configuration(self, proxy_id: str) -> FailoverConfig | None:
        return await configs.get_failover_configuration(self._ctx, proxy_id)

    async def delete_failover_configuration(self, proxy_id: str, user_id: str) -> None:
        """Delete the proxy with its instances and webhooks; its events and audit rows stay."""
        await configs.delete_failover_configuration(self._ctx, proxy_id, user_id)

    async def list_proxies(self, user_id: str | None = None) -> list[ProxySummary]:
        """Every proxy with its redundancy (``user_id`` None = all, else the ones it owns)."""
        return await configs.list_proxies(self._ctx, user_id)

    async def get_redundancy_status(self, proxy_id: str) -> RedundancyStatus | None:
        return await redundancy.get_redundancy_status(self._ctx, proxy_id)

    async def update_redundancy_status(
        self, proxy_id: str, user_id: str, status_data: Mapping[str, Any]
    ) -> RedundancyStatus:
        """The seed's override (SPEC §7): stored as given, ``overridden`` until the next
        recompute; never moves the active pointer or the epoch (014 when inconsistent)."""
        return await redundancy.update_redundancy_status(self._ctx, proxy_id, user_id, status_data)

    # --- instances (instances.py) -------------------------------------------------------------

    async def register_proxy_instance(
        self,
        proxy_id: str,
        user_id: str,
        instance_data: Mapping[str, Any],
        *,
        outbound_trusted: bool = True,
    ) -> Instance:
        """Add an instance (name unique per proxy, 005); an unknown proxy gets a default config.
        ``outbound_trusted``: an admin or the library registers it (``core.outbound``)."""
        return await instances.register_proxy_instance(
            self._ctx, proxy_id, user_id, instance_data, outbound_trusted=outbound_trusted
        )

    async def get_proxy_instances(self, proxy_id: str) -> list[Instance]:
        """The proxy's instances in preference order (empty for an unknown proxy)."""
        return await instances.get_proxy_instances(self._ctx, proxy_id)

    async def get_instance(self, instance_id: str) -> Instance:
        return await instances.get_instance(self._ctx, instance_id)

    async def update_instance(
        self,
        instance_id: str,
        user_id: str,
        changes: Mapping[str, Any],
        *,
        outbound_trusted: bool = True,
    ) -> Instance:
        """PATCH priority, weight, endpoint, trafficAddress, recoveryUrl, adminState, metadata."""
        return await instances.update_instance(
            self._ctx, instance_id, user_id, changes, outbound_trusted=outbound_trusted
        )

    async def delete_instance(self, instance_id: str, user_id: str) -> None:
        """Remove an instance; the active one first hands its role on (a completed switchover)."""
        await instances.delete_instance(self._ctx, instance_id, user_id)

    async def record_instance_metrics(
        self, instance_id: str, proxy_id: str, user_id: str, metrics: Mapping[str, Any]
    ) -> StoredMetricSample:
        """Store one metric sample (007 when empty or invalid) for an instance of ``proxy_id``."""
        return await instances.record_instance_metrics(
            self._ctx, instance_id, proxy_id, user_id, metrics
        )

    async def get_instance_metrics(
        self, instance_id: str, limit: int = 100
    ) -> list[StoredMetricSample]:
        """The instance's metric samples, newest first (004; limit 1-1000 else 001)."""
        return await instances.get_instance_metrics(self._ctx, instance_id, limit)

    # --- health (health.py, checks.py) --------------------------------------------------------

    async def update_instance_health(
        self, instance_id: str, health_status: str, metrics: Mapping[str, Any] | None = None
    ) -> Instance:
        """An authoritative health report (SPEC §4); an optional metrics sample is stored too."""
        return await health.update_instance_health(
            self._ctx, self.health_reports, instance_id, health_status, metrics
        )

    async def record_check_result(self, instance_id: str, result: CheckResult) -> Instance:
        """One probe/external check through the rise/fall state machine, with request counters."""
        return await checks.record_check_result(self._ctx, instance_id, result)

    async def record_check_results(
        self, results: Sequence[tuple[str, CheckResult]]
    ) -> list[Instance | None]:
        """Many check results in order, each as ``record_check_result`` does (None: gone)."""
        return await checks.record_check_results(self._ctx, results)

    async def record_probe_results(
        self, results: Sequence[tuple[str, CheckResult]]
    ) -> list[HealthState | None]:
        """The engine's cheap form of ``record_check_results``: each item's health afterwards."""
        return await checks.record_probe_results(self._ctx, results)

    # --- failover and events (failover.py, events.py) -----------------------------------------

    async def evaluate_failover(self, proxy_id: str, user_id: str | None = None) -> Evaluation:
        """Side-effect free: is a failover due, from where to where, and why (002 if no proxy)."""
        return await failover.evaluate_failover(self._ctx, proxy_id)

    async def execute_failover(
        self,
        proxy_id: str,
        user_id: str,
        source_id: str | None,
        target_id: str,
        reason: str | None = None,
    ) -> FailoverEvent:
        """Switch the active instance: a compare-and-swap on the pointer, in one transaction."""
        return await failover.execute_failover(
            self._ctx, proxy_id, user_id, source_id, target_id, reason
        )

    async def complete_failover_event(
        self,
        event_id: str,
        status: str,
        error_message: str | None = None,
        duration_ms: int | None = None,
    ) -> FailoverEvent:
        """Close an open event once as completed or failed (001, 012, 013); pointer unchanged."""
        return await events.complete_failover_event(
            self._ctx, event_id, status, error_message, duration_ms
        )

    async def get_failover_events(
        self,
        proxy_id: str,
        limit: int = 50,
        *,
        status: EventStatus | None = None,
        event_type: EventType | None = None,
        before: datetime | None = None,
        cursor: str | None = None,
    ) -> list[FailoverEvent]:
        """Newest first by start time; ``limit`` 1-1000 (001); empty for an unknown proxy;
        ``cursor`` from ``core.pagination.event_cursor`` of a page's last event continues."""
        return await events.get_failover_events(
            self._ctx,
            proxy_id,
            limit,
            status=status,
            event_type=event_type,
            before=before,
            cursor=cursor,
        )

    async def get_event(self, event_id: str) -> FailoverEvent:
        return await events.get_event(self._ctx, event_id)

    # --- route and explain (route.py) ---------------------------------------------------------

    async def get_route(self, proxy_id: str) -> Route:
        """The instance a client should use now: the active one, or a load-balanced pick (008)."""
        return await route.get_route(self._ctx, proxy_id)

    async def explain(self, proxy_id: str) -> Explanation:
        return await route.explain(self._ctx, proxy_id)

    async def get_desired_state(self, proxy_id: str) -> DesiredState:
        """What a data plane should do with the proxy's traffic now (404/002 when unknown)."""
        return await route.get_desired_state(self._ctx, proxy_id)

    # --- for the engine (engine_ops.py, failover.py, events.py) -------------------------------

    async def list_proxy_ids(self) -> list[str]:
        return await engine_ops.list_proxy_ids(self._ctx)

    async def proxy_versions(self) -> dict[str, int]:
        """Every proxy's change counter (moves with every change but routine probe successes)."""
        return await engine_ops.proxy_versions(self._ctx)

    async def load_snapshot(self, proxy_id: str) -> ProxySnapshot:
        """One consistent view of a proxy, read in one transaction (002 if it has no config)."""
        return await engine_ops.load_snapshot(self._ctx, proxy_id)

    async def apply_decision(
        self, proxy_id: str, decision: Decision, detected_at: datetime
    ) -> FailoverEvent | None:
        """Apply the engine's decision in one transaction, or None if it no longer holds."""
        return await failover.apply_decision(self._ctx, proxy_id, decision, detected_at)

    async def close_stale_events(self) -> list[FailoverEvent]:
        """Close switching events open longer than ``STALE_EVENT_SECONDS`` as failed (timeout)."""
        return await events.close_stale_events(self._ctx)

    async def expire_health_reports(self, proxy_id: str) -> list[Instance]:
        """Reported statuses older than ``healthReportTtlSeconds`` turn unhealthy ("report
        expired"); returns the instances that expired (``service.health``)."""
        return await health.expire_health_reports(self._ctx, proxy_id)

    async def prune_history(self, policy: RetentionPolicy) -> dict[str, int]:
        """Retention: one batch of old finished history per table (``service.retention``)."""
        return await retention.prune_history(self._ctx, policy)

    async def open_recovery_event(self, instance_id: str, reason: str) -> FailoverEvent | None:
        """Open an ``in_progress`` recovery event for an instance; None if one is already open."""
        return await events.open_recovery_event(self._ctx, instance_id, reason)

    async def close_recovery_event(
        self, event_id: str, status: EventStatus, error_message: str | None = None
    ) -> FailoverEvent:
        """Close a recovery event (012 missing or not a recovery, 013 already closed)."""
        return await events.close_recovery_event(self._ctx, event_id, status, error_message)

    # --- webhooks and audit (webhooks.py, audit.py) -------------------------------------------

    async def create_webhook_subscription(
        self,
        proxy_id: str,
        user_id: str,
        url: str,
        secret: str,
        events: Sequence[str] | None = None,
        *,
        include_health_detail: bool = False,
    ) -> Subscription:
        """Subscribe ``url`` to the proxy's notifications (001 invalid, 002 no such proxy)."""
        return await webhooks.create_subscription(
            self._ctx,
            proxy_id,
            user_id,
            url,
            secret,
            events,
            include_health_detail=include_health_detail,
        )

    async def list_webhook_subscriptions(self, proxy_id: str) -> list[Subscription]:
        return await webhooks.list_subscriptions(self._ctx, proxy_id)

    async def delete_webhook_subscription(self, proxy_id: str, subscription_id: str) -> None:
        """Remove a subscription and cancel its pending deliveries (020 when unknown)."""
        await webhooks.delete_subscription(self._ctx, proxy_id, subscription_id)

    async def list_webhook_deliveries(
        self,
        proxy_id: str,
        limit: int = 50,
        *,
        status: DeliveryStatus | None = None,
        subscription_id: str | None = None,
        cursor: str | None = None,
    ) -> list[Delivery]:
        """Deliveries, newest first, each with every attempt made; ``cursor`` from
        ``core.pagination.sequence_cursor(DELIVERIES, last.seq)`` continues after a page."""
        return await webhooks.list_deliveries(
            self._ctx,
            proxy_id,
            limit,
            status=status,
            subscription_id=subscription_id,
            cursor=cursor,
        )

    async def redeliver_webhook(self, proxy_id: str, delivery_id: str) -> Delivery:
        """Queue a delivery again now (020 when unknown); the delivery worker must be woken."""
        return await webhooks.redeliver(self._ctx, proxy_id, delivery_id)

    async def record_audit(
        self,
        *,
        actor: str,
        action: str,
        result: str,
        proxy_id: str | None = None,
        target: str | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        """Record one API call in the audit log, stamped with the service's clock."""
        await audit.record_call(
            self._ctx,
            actor=actor,
            action=action,
            result=result,
            proxy_id=proxy_id,
            target=target,
            status_code=status_code,
            request_id=request_id,
        )

    async def list_audit(
        self, proxy_id: str | None = None, limit: int = 100, *, cursor: str | None = None
    ) -> list[AuditEntry]:
        """The audit log, newest first (``proxy_id`` None: all of it); ``cursor`` from
        ``core.pagination.sequence_cursor(AUDIT, last.id)`` continues after a page."""
        return await audit.list_entries(self._ctx, proxy_id, limit, cursor)
