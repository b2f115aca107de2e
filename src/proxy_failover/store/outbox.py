"""Durable notifications: event log, webhook subscriptions, delivery outbox, audit log.

``Outbox.write_notifications`` is a store notification writer: it runs inside the transaction of the
change that produced the notifications, so an event, its webhook deliveries and the audit row of an
automatic action are committed together with the change or not at all. Delivery workers claim due
deliveries with a lease (plus ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), one head-of-line delivery
per subscription at a time, which keeps deliveries in order per subscription across replicas.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from proxy_failover.core import webhooks
from proxy_failover.core.model import Notification
from proxy_failover.core.webhooks import (
    AuditEntry,
    ClaimedDelivery,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    StoredNotification,
    Subscription,
)
from proxy_failover.store import database
from proxy_failover.store.group_commit import GroupCommit
from proxy_failover.store.tables import UTCDateTime, instances, metadata, redundancy

#: Who is acting in the current task: set by the API for the duration of a request. Notifications
#: written while it is unset come from background work and are audited as ``system`` actions.
current_actor: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pfo_current_actor", default=None
)

SYSTEM_ACTOR = "system"


@dataclass(frozen=True, slots=True)
class ProxyGauge:
    """A proxy's redundancy figures, as ``/metrics`` reports them."""

    proxy_id: str
    epoch: int
    active_instance_id: str | None
    healthy_instances: int
    total_instances: int
    is_degraded: bool


@dataclass(frozen=True, slots=True)
class InstanceGauge:
    """An instance's health, as ``/metrics`` reports it."""

    proxy_id: str
    instance_id: str
    instance_name: str
    health_status: str


# --- tables ----------------------------------------------------------------------------------

notification_log = sa.Table(
    "notification_log",
    metadata,
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("proxy_id", sa.String(128), nullable=False, index=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("epoch", sa.BigInteger(), nullable=False),
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    # The encoded webhook payload: stored once so every retry posts the very same bytes.
    sa.Column("body", sa.Text(), nullable=False),
)

webhook_subscriptions = sa.Table(
    "webhook_subscriptions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("proxy_id", sa.String(128), nullable=False, index=True),
    sa.Column("user_id", sa.String(255), nullable=False, index=True),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("secret", sa.String(512), nullable=False),
    sa.Column("events", sa.JSON(), nullable=True),
    # Whether deliveries carry admin-only health detail (lastError, lastLatencyMs): only when an
    # admin created the subscription.
    sa.Column("include_health_detail", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # Soft delete: the delivery history of a removed subscription stays readable.
    sa.Column("deleted_at", UTCDateTime(), nullable=True),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column(
        "subscription_id",
        sa.String(36),
        sa.ForeignKey("webhook_subscriptions.id"),
        nullable=False,
    ),
    sa.Column(
        "notification_id", sa.String(36), sa.ForeignKey("notification_log.id"), nullable=False
    ),
    sa.Column("proxy_id", sa.String(128), nullable=False, index=True),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("first_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("last_status_code", sa.Integer(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("delivered_at", UTCDateTime(), nullable=True),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
    sa.Index(
        "ix_webhook_deliveries_subscription_id_status_seq", "subscription_id", "status", "seq"
    ),
)

webhook_delivery_attempts = sa.Table(
    "webhook_delivery_attempts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("delivery_id", sa.String(36), sa.ForeignKey("webhook_deliveries.id"), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("attempted_at", UTCDateTime(), nullable=False),
    sa.Column("success", sa.Boolean(), nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("latency_ms", sa.Float(), nullable=False),
    sa.Index("ix_webhook_delivery_attempts_delivery_id_attempt", "delivery_id", "attempt"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("occurred_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("actor", sa.String(255), nullable=False, index=True),
    sa.Column("action", sa.String(128), nullable=False),
    sa.Column("proxy_id", sa.String(128), nullable=True, index=True),
    sa.Column("target", sa.String(255), nullable=True),
    sa.Column("result", sa.String(64), nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=True),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("details", sa.JSON(), nullable=True),
)

_PENDING = DeliveryStatus.PENDING.value


def _new_id() -> str:
    return str(uuid.uuid4())


def _audit_target(notification: Notification) -> str | None:
    """The most specific thing an automatic action touched: its event, else its instance."""
    data = notification.data
    for key in ("eventId", "id", "instanceId", "targetInstanceId"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value[:255]
    return None


# --- row <-> value ---------------------------------------------------------------------------


def _subscription_from(row: sa.RowMapping) -> Subscription:
    events = row["events"]
    return Subscription(
        id=row["id"],
        proxy_id=row["proxy_id"],
        user_id=row["user_id"],
        url=row["url"],
        events=None if events is None else tuple(events),
        created_at=row["created_at"],
    )


def _attempt_from(row: sa.RowMapping) -> DeliveryAttempt:
    return DeliveryAttempt(
        attempt=row["attempt"],
        attempted_at=row["attempted_at"],
        success=row["success"],
        status_code=row["status_code"],
        error=row["error"],
        latency_ms=row["latency_ms"],
    )


def _delivery_from(row: sa.RowMapping, attempts: Sequence[DeliveryAttempt]) -> Delivery:
    return Delivery(
        id=row["id"],
        subscription_id=row["subscription_id"],
        proxy_id=row["proxy_id"],
        event_id=row["notification_id"],
        event_type=row["event_type"],
        status=DeliveryStatus(row["status"]),
        attempts=row["attempts"],
        created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"],
        last_attempt_at=row["last_attempt_at"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        delivered_at=row["delivered_at"],
        attempt_log=tuple(attempts),
    )


def _audit_from(row: sa.RowMapping) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        occurred_at=row["occurred_at"],
        actor=row["actor"],
        action=row["action"],
        proxy_id=row["proxy_id"],
        target=row["target"],
        result=row["result"],
        status_code=row["status_code"],
        request_id=row["request_id"],
        details=dict(row["details"] or {}),
    )


class Outbox:
    """Repository of the tables above, on the store's engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._audit_rows: GroupCommit[str, dict[str, Any], None] = GroupCommit(self._insert_audit)
        self._writer_engine = engine.execution_options(
            **{database.SQLITE_BEGIN_OPTION: "IMMEDIATE"}
        )

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with (
            database.write_gate(self.engine),
            database.mapped_errors(),
            self._writer_engine.begin() as conn,
        ):
            yield conn

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with database.mapped_errors(), self.engine.connect() as conn:
            yield conn

    # --- the notification writer (inside the change's transaction) ----------------------------

    async def write_notifications(
        self, session: AsyncSession, notifications: Sequence[Notification]
    ) -> None:
        """Log each notification, queue a delivery per interested subscription, audit system acts.

        Runs before the change commits: all of it is durable exactly when the change is.
        """
        if not notifications:
            return
        proxy_ids = sorted({n.proxy_id for n in notifications})
        rows = (
            (
                await session.execute(
                    sa.select(webhook_subscriptions)
                    .where(
                        webhook_subscriptions.c.proxy_id.in_(proxy_ids),
                        webhook_subscriptions.c.deleted_at.is_(None),
                    )
                    .order_by(webhook_subscriptions.c.created_at, webhook_subscriptions.c.id)
                )
            )
            .mappings()
            .all()
        )
        subscriptions = [_subscription_from(row) for row in rows]
        actor = current_actor.get()
        for notification in notifications:
            event_id = _new_id()
            body = webhooks.encode_payload(webhooks.build_payload(event_id, notification))
            await session.execute(
                sa.insert(notification_log).values(
                    id=event_id,
                    proxy_id=notification.proxy_id,
                    type=notification.type,
                    epoch=notification.epoch,
                    occurred_at=notification.occurred_at,
                    body=body,
                )
            )
            deliveries = [
                {
                    "id": _new_id(),
                    "subscription_id": sub.id,
                    "notification_id": event_id,
                    "proxy_id": notification.proxy_id,
                    "event_type": notification.type,
                    "status": _PENDING,
                    "attempts": 0,
                    "created_at": notification.occurred_at,
                    "next_attempt_at": notification.occurred_at,
                }
                for sub in subscriptions
                if sub.proxy_id == notification.proxy_id
                and webhooks.wants(sub.events, notification.type)
            ]
            if deliveries:
                await session.execute(sa.insert(webhook_deliveries), deliveries)
            if actor is None:  # API calls are audited by the API itself, with their caller
                await session.execute(
                    sa.insert(audit_log).values(
                        occurred_at=notification.occurred_at,
                        actor=SYSTEM_ACTOR,
                        action=notification.type,
                        proxy_id=notification.proxy_id,
                        target=_audit_target(notification),
                        result="success",
                        details={"epoch": notification.epoch, "data": json.loads(body)["data"]},
                    )
                )

    # --- subscriptions -------------------------------------------------------------------------

    async def create_subscription(
        self,
        proxy_id: str,
        user_id: str,
        url: str,
        secret: str,
        events: Sequence[str] | None,
        now: datetime,
        *,
        include_health_detail: bool = False,
    ) -> Subscription:
        sub = Subscription(
            id=_new_id(),
            proxy_id=proxy_id,
            user_id=user_id,
            url=url,
            events=None if events is None else tuple(events),
            created_at=now,
        )
        async with self._write() as conn:
            await conn.execute(
                sa.insert(webhook_subscriptions).values(
                    id=sub.id,
                    proxy_id=proxy_id,
                    user_id=user_id,
                    url=url,
                    secret=secret,
                    events=None if events is None else list(events),
                    include_health_detail=include_health_detail,
                    created_at=now,
                )
            )
        return sub

    async def list_subscriptions(self, proxy_id: str) -> list[Subscription]:
        async with self._read() as conn:
            rows = (
                (
                    await conn.execute(
                        sa.select(webhook_subscriptions)
                        .where(
                            webhook_subscriptions.c.proxy_id == proxy_id,
                            webhook_subscriptions.c.deleted_at.is_(None),
                        )
                        .order_by(webhook_subscriptions.c.created_at, webhook_subscriptions.c.id)
                    )
                )
                .mappings()
                .all()
            )
        return [_subscription_from(row) for row in rows]

    async def delete_subscription(self, proxy_id: str, subscription_id: str, now: datetime) -> bool:
        """Remove a subscription and cancel its pending deliveries; False when there is none."""
        async with self._write() as conn:
            result = await conn.execute(
                sa.update(webhook_subscriptions)
                .where(
                    webhook_subscriptions.c.id == subscription_id,
                    webhook_subscriptions.c.proxy_id == proxy_id,
                    webhook_subscriptions.c.deleted_at.is_(None),
                )
                .values(deleted_at=now)
            )
            if not result.rowcount:
                return False
            await conn.execute(
                sa.update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.subscription_id == subscription_id,
                    webhook_deliveries.c.status == _PENDING,
                )
                .values(
                    status=DeliveryStatus.CANCELLED.value,
                    next_attempt_at=None,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
        return True

    # --- deliveries: API -----------------------------------------------------------------------

    async def _attempts_for(
        self, conn: AsyncConnection, delivery_ids: Sequence[str]
    ) -> dict[str, list[DeliveryAttempt]]:
        by_delivery: dict[str, list[DeliveryAttempt]] = {d: [] for d in delivery_ids}
        if not delivery_ids:
            return by_delivery
        rows = (
            (
                await conn.execute(
                    sa.select(webhook_delivery_attempts)
                    .where(webhook_delivery_attempts.c.delivery_id.in_(list(delivery_ids)))
                    .order_by(
                        webhook_delivery_attempts.c.delivery_id,
                        webhook_delivery_attempts.c.attempt,
                    )
                )
            )
            .mappings()
            .all()
        )
        for row in rows:
            by_delivery[row["delivery_id"]].append(_attempt_from(row))
        return by_delivery

    async def list_deliveries(
        self,
        proxy_id: str,
        limit: int = 50,
        *,
        status: DeliveryStatus | None = None,
        subscription_id: str | None = None,
    ) -> list[Delivery]:
        """Newest first, each with its attempts (oldest first)."""
        statement = sa.select(webhook_deliveries).where(webhook_deliveries.c.proxy_id == proxy_id)
        if status is not None:
            statement = statement.where(webhook_deliveries.c.status == status.value)
        if subscription_id is not None:
            statement = statement.where(webhook_deliveries.c.subscription_id == subscription_id)
        statement = statement.order_by(webhook_deliveries.c.seq.desc()).limit(limit)
        async with self._read() as conn:
            rows = (await conn.execute(statement)).mappings().all()
            attempts = await self._attempts_for(conn, [row["id"] for row in rows])
        return [_delivery_from(row, attempts[row["id"]]) for row in rows]

    async def _fetch_delivery(
        self, conn: AsyncConnection, proxy_id: str, delivery_id: str
    ) -> Delivery | None:
        row = (
            (
                await conn.execute(
                    sa.select(webhook_deliveries).where(
                        webhook_deliveries.c.id == delivery_id,
                        webhook_deliveries.c.proxy_id == proxy_id,
                    )
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        attempts = await self._attempts_for(conn, [row["id"]])
        return _delivery_from(row, attempts[row["id"]])

    async def redeliver(self, proxy_id: str, delivery_id: str, now: datetime) -> Delivery | None:
        """Queue a delivery again, due now, with a fresh 24 h window; None if no such delivery.

        The delivery keeps its id (receivers de-duplicate by it, as with GitHub's redeliveries)
        and its attempt history. A delivery of a removed subscription cannot be redelivered.
        """
        async with self._write() as conn:
            active_subscription = (
                sa.select(webhook_subscriptions.c.id)
                .where(
                    webhook_subscriptions.c.id == webhook_deliveries.c.subscription_id,
                    webhook_subscriptions.c.deleted_at.is_(None),
                )
                .exists()
            )
            result = await conn.execute(
                sa.update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.id == delivery_id,
                    webhook_deliveries.c.proxy_id == proxy_id,
                    active_subscription,
                )
                .values(
                    status=_PENDING,
                    next_attempt_at=now,
                    first_attempt_at=None,
                    delivered_at=None,
                )
            )
            if not result.rowcount:
                return None
            # read in the same transaction: what was queued, before any worker can touch it
            return await self._fetch_delivery(conn, proxy_id, delivery_id)

    # --- deliveries: worker --------------------------------------------------------------------

    async def claim_due(
        self, owner: str, now: datetime, lease_seconds: float, limit: int = 20
    ) -> list[ClaimedDelivery]:
        """Lease up to ``limit`` due deliveries, each the oldest pending one of its subscription.

        A delivery is claimable when it is pending, due, not leased by a live worker and no older
        delivery of its subscription is still pending: so a subscription never has two deliveries
        in flight, and N+1 waits until N is delivered or dead.
        """
        d = webhook_deliveries
        candidates = (
            sa.select(d.c.id)
            .where(self._claimable(now), d.c.next_attempt_at <= now)
            .order_by(d.c.seq)
            .limit(limit)
        )
        if self.is_postgres:
            candidates = candidates.with_for_update(skip_locked=True, of=d)
        async with self._write() as conn:
            ids = (await conn.execute(candidates)).scalars().all()
            return await self._lease(conn, ids, owner, now, lease_seconds)

    async def _lease(
        self,
        conn: AsyncConnection,
        delivery_ids: Sequence[str],
        owner: str,
        now: datetime,
        lease_seconds: float,
    ) -> list[ClaimedDelivery]:
        """Compare-and-set the lease of each delivery (only one worker wins it); load the won."""
        d = webhook_deliveries
        lease_free = sa.or_(d.c.lease_expires_at.is_(None), d.c.lease_expires_at < now)
        lease_until = now + timedelta(seconds=lease_seconds)
        claimed_ids: list[str] = []
        for delivery_id in delivery_ids:
            won = await conn.execute(
                sa.update(d)
                .where(d.c.id == delivery_id, d.c.status == _PENDING, lease_free)
                .values(lease_owner=owner, lease_expires_at=lease_until)
            )
            if won.rowcount:
                claimed_ids.append(delivery_id)
        if not claimed_ids:
            return []
        rows = (
            (
                await conn.execute(
                    sa.select(
                        d.c.id,
                        d.c.subscription_id,
                        d.c.proxy_id,
                        d.c.event_type,
                        d.c.attempts,
                        d.c.first_attempt_at,
                        webhook_subscriptions.c.url,
                        webhook_subscriptions.c.secret,
                        webhook_subscriptions.c.include_health_detail,
                        notification_log.c.body,
                    )
                    .join(webhook_subscriptions, webhook_subscriptions.c.id == d.c.subscription_id)
                    .join(notification_log, notification_log.c.id == d.c.notification_id)
                    .where(d.c.id.in_(claimed_ids))
                    .order_by(d.c.seq)
                )
            )
            .mappings()
            .all()
        )
        return [
            ClaimedDelivery(
                id=row["id"],
                subscription_id=row["subscription_id"],
                proxy_id=row["proxy_id"],
                event_type=row["event_type"],
                url=row["url"],
                secret=row["secret"],
                body=(
                    row["body"]
                    if row["include_health_detail"]
                    else webhooks.without_health_detail(row["body"])
                ),
                attempts=row["attempts"],
                first_attempt_at=row["first_attempt_at"],
            )
            for row in rows
        ]

    async def record_attempt(
        self,
        delivery: ClaimedDelivery,
        owner: str,
        attempted_at: datetime,
        *,
        success: bool,
        status_code: int | None,
        error: str | None,
        latency_ms: float,
        next_attempt_at: datetime | None,
        claim_next_for: float | None = None,
        now: datetime | None = None,
    ) -> tuple[DeliveryStatus, ClaimedDelivery | None]:
        """Store one attempt and the delivery's new state, release its lease; return the state.

        ``next_attempt_at`` None after a failure means the schedule is spent: the delivery is dead.
        A delivery cancelled meanwhile (its subscription removed) stays cancelled. With
        ``claim_next_for`` (lease seconds), once this delivery is done (delivered or dead), the
        subscription's next delivery, if due, is claimed in the same transaction and returned:
        a busy subscription is drained by one worker without a round trip per delivery.
        """
        attempt_no = delivery.attempts + 1
        if success:
            status = DeliveryStatus.DELIVERED
        elif next_attempt_at is None:
            status = DeliveryStatus.DEAD
        else:
            status = DeliveryStatus.PENDING
        d = webhook_deliveries
        async with self._write() as conn:
            await conn.execute(
                sa.insert(webhook_delivery_attempts).values(
                    id=_new_id(),
                    delivery_id=delivery.id,
                    attempt=attempt_no,
                    attempted_at=attempted_at,
                    success=success,
                    status_code=status_code,
                    error=error,
                    latency_ms=latency_ms,
                )
            )
            await conn.execute(
                sa.update(d)
                .where(d.c.id == delivery.id, d.c.status == _PENDING)
                .values(
                    status=status.value,
                    attempts=d.c.attempts + 1,
                    first_attempt_at=sa.func.coalesce(d.c.first_attempt_at, attempted_at),
                    last_attempt_at=attempted_at,
                    last_status_code=status_code,
                    last_error=error,
                    next_attempt_at=next_attempt_at if status is DeliveryStatus.PENDING else None,
                    delivered_at=attempted_at if success else None,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            if claim_next_for is None or status is DeliveryStatus.PENDING:
                return status, None
            # The subscription's oldest pending delivery is its head now; claim it if it is due.
            head = (
                await conn.execute(
                    sa.select(d.c.id, d.c.next_attempt_at)
                    .where(d.c.subscription_id == delivery.subscription_id, d.c.status == _PENDING)
                    .order_by(d.c.seq)
                    .limit(1)
                )
            ).first()
            now = now or attempted_at
            if head is None or head.next_attempt_at is None or head.next_attempt_at > now:
                return status, None
            claimed = await self._lease(conn, [head.id], owner, now, claim_next_for)
        return status, (claimed[0] if claimed else None)

    async def release(self, owner: str) -> None:
        """Give back every lease ``owner`` holds (a worker stopping with posts in flight)."""
        d = webhook_deliveries
        async with self._write() as conn:
            await conn.execute(
                sa.update(d)
                .where(d.c.lease_owner == owner, d.c.status == _PENDING)
                .values(lease_owner=None, lease_expires_at=None)
            )

    def _claimable(self, now: datetime) -> sa.ColumnElement[bool]:
        """Pending, not leased by a live worker, and the oldest pending one of its subscription."""
        d = webhook_deliveries
        earlier = d.alias("earlier")
        older_pending = (
            sa.select(earlier.c.seq)
            .where(
                earlier.c.subscription_id == d.c.subscription_id,
                earlier.c.status == _PENDING,
                earlier.c.seq < d.c.seq,
            )
            .exists()
        )
        lease_free = sa.or_(d.c.lease_expires_at.is_(None), d.c.lease_expires_at < now)
        return sa.and_(d.c.status == _PENDING, lease_free, ~older_pending)

    async def next_due_at(self, now: datetime) -> datetime | None:
        """When the next claimable delivery falls due (None: nothing queued)."""
        d = webhook_deliveries
        async with self._read() as conn:
            due: datetime | None = (
                await conn.execute(
                    sa.select(sa.func.min(d.c.next_attempt_at, type_=UTCDateTime())).where(
                        self._claimable(now)
                    )
                )
            ).scalar()
        return due

    async def backlog(self) -> dict[str, int]:
        """Pending deliveries per proxy (the ``pfo_webhook_backlog`` gauge)."""
        d = webhook_deliveries
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    sa.select(d.c.proxy_id, sa.func.count())
                    .where(d.c.status == _PENDING)
                    .group_by(d.c.proxy_id)
                )
            ).all()
        return {proxy_id: int(count) for proxy_id, count in rows}

    async def gauges(self) -> tuple[list[ProxyGauge], list[InstanceGauge]]:
        """Every proxy's redundancy figures and every instance's health: two queries in all,
        however many proxies there are (a scrape must stay cheap)."""
        async with self._read() as conn:
            proxies = (
                await conn.execute(
                    sa.select(
                        redundancy.c.proxy_id,
                        redundancy.c.epoch,
                        redundancy.c.active_instance_id,
                        redundancy.c.healthy_instances,
                        redundancy.c.total_instances,
                        redundancy.c.is_degraded,
                    ).order_by(redundancy.c.proxy_id)
                )
            ).all()
            members = (
                await conn.execute(
                    sa.select(
                        instances.c.proxy_id,
                        instances.c.id,
                        instances.c.instance_name,
                        instances.c.health_status,
                    ).order_by(instances.c.proxy_id, instances.c.priority, instances.c.id)
                )
            ).all()
        return (
            [ProxyGauge(r[0], int(r[1]), r[2], int(r[3]), int(r[4]), bool(r[5])) for r in proxies],
            [InstanceGauge(r[0], r[1], r[2], r[3]) for r in members],
        )

    # --- event log (the SSE stream) ------------------------------------------------------------

    async def last_notification_seq(self, proxy_id: str) -> int:
        """Where a new stream starts: it sees only what happens after it connected."""
        n = notification_log
        async with self._read() as conn:
            last = (
                await conn.execute(sa.select(sa.func.max(n.c.seq)).where(n.c.proxy_id == proxy_id))
            ).scalar()
        return int(last or 0)

    async def notifications_after(
        self, proxy_id: str, after_seq: int, limit: int = 100
    ) -> list[StoredNotification]:
        """The proxy's notifications with ``seq > after_seq``, oldest first."""
        n = notification_log
        async with self._read() as conn:
            rows = (
                (
                    await conn.execute(
                        sa.select(n)
                        .where(n.c.proxy_id == proxy_id, n.c.seq > after_seq)
                        .order_by(n.c.seq)
                        .limit(limit)
                    )
                )
                .mappings()
                .all()
            )
        return [
            StoredNotification(seq=row["seq"], id=row["id"], type=row["type"], body=row["body"])
            for row in rows
        ]

    # --- audit -----------------------------------------------------------------------------------

    async def record_audit(self, entry: AuditEntry) -> None:
        """Write one audit row; returns once it is committed.

        Group commit (``store.group_commit``): rows recorded while a batch waits for the write
        gate join the next one, and one transaction (one multi-row INSERT) commits them all.
        Under load that is one transaction per batch instead of one per request.
        """
        row = {
            "occurred_at": entry.occurred_at,
            "actor": entry.actor[:255],
            "action": entry.action[:128],
            "proxy_id": None if entry.proxy_id is None else entry.proxy_id[:128],
            "target": None if entry.target is None else entry.target[:255],
            "result": entry.result[:64],
            "status_code": entry.status_code,
            "request_id": entry.request_id,
            "details": dict(entry.details) or None,
        }
        await self._audit_rows.submit("", row)

    async def _insert_audit(
        self, _key: str, take: Callable[[], list[dict[str, Any]]]
    ) -> list[Exception | None]:
        """One multi-row INSERT of the audit rows waiting when the write gate opens."""
        async with self._write() as conn:
            rows = take()
            await conn.execute(sa.insert(audit_log), rows)
        return [None] * len(rows)

    async def list_audit(self, proxy_id: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first."""
        statement = sa.select(audit_log)
        if proxy_id is not None:
            statement = statement.where(audit_log.c.proxy_id == proxy_id)
        statement = statement.order_by(audit_log.c.id.desc()).limit(limit)
        async with self._read() as conn:
            rows = (await conn.execute(statement)).mappings().all()
        return [_audit_from(row) for row in rows]
