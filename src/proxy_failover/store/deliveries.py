"""The webhook delivery queue as the delivery workers see it: queue, claim, attempt, release.

Deliveries are queued by the notification writer (``store.notifications``) inside the transaction
of the change. Workers claim due deliveries with a lease (plus ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL), one head-of-line delivery per subscription at a time, which keeps deliveries in order
per subscription across replicas.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from proxy_failover.core import webhooks
from proxy_failover.core.model import Notification
from proxy_failover.core.webhooks import ClaimedDelivery, DeliveryStatus, Subscription
from proxy_failover.store import database
from proxy_failover.store.rows import new_id
from proxy_failover.store.tables import (
    UTCDateTime,
    notification_log,
    webhook_deliveries,
    webhook_delivery_attempts,
    webhook_subscriptions,
)

_PENDING = DeliveryStatus.PENDING.value


async def queue_deliveries(
    connection: AsyncConnection,
    subscriptions: Sequence[Subscription],
    notification: Notification,
    event_id: str,
) -> bool:
    """Queue one delivery of the logged notification ``event_id`` per interested subscription;
    True when it queued any."""
    deliveries = [
        {
            "id": new_id(),
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
        if sub.proxy_id == notification.proxy_id and webhooks.wants(sub.events, notification.type)
    ]
    if deliveries:
        await connection.execute(sa.insert(webhook_deliveries), deliveries)
    return bool(deliveries)


def _lease_free(now: datetime) -> sa.ColumnElement[bool]:
    """A delivery no live worker holds: never leased, or its lease expired."""
    d = webhook_deliveries
    return sa.or_(d.c.lease_expires_at.is_(None), d.c.lease_expires_at < now)


def _claimable(now: datetime) -> sa.ColumnElement[bool]:
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
    return sa.and_(d.c.status == _PENDING, _lease_free(now), ~older_pending)


def _due(now: datetime, limit: int, subscription_id: str | None = None) -> sa.Select[str]:
    """The ids of claimable deliveries due by ``now`` (of one subscription), oldest first."""
    d = webhook_deliveries
    statement = sa.select(d.c.id).where(_claimable(now), d.c.next_attempt_at <= now)
    if subscription_id is not None:
        statement = statement.where(d.c.subscription_id == subscription_id)
    return statement.order_by(d.c.seq).limit(limit)


class DeliveryQueue:
    """Claims, attempts and leases of queued deliveries, on the store's engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._db = database.EngineAccess(engine)

    async def claim_due(
        self, owner: str, now: datetime, lease_seconds: float, limit: int = 20
    ) -> list[ClaimedDelivery]:
        """Lease up to ``limit`` due deliveries, each the oldest pending one of its subscription.

        A delivery is claimable when it is pending, due, not leased by a live worker and no older
        delivery of its subscription is still pending: so a subscription never has two deliveries
        in flight, and N+1 waits until N is delivered or dead.
        """
        candidates = _due(now, limit)
        if self._db.is_postgres:
            candidates = candidates.with_for_update(skip_locked=True, of=webhook_deliveries)
        async with self._db.write() as conn:
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
        lease_free = _lease_free(now)
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
                # set from the subscriber's role when it subscribed, like health detail
                made_by_admin=row["include_health_detail"],
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
        status = webhooks.status_after_attempt(success, next_attempt_at)
        d = webhook_deliveries
        async with self._db.write() as conn:
            await conn.execute(
                sa.insert(webhook_delivery_attempts).values(
                    id=new_id(),
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
            now = now or attempted_at
            head = (await conn.execute(_due(now, 1, delivery.subscription_id))).scalars().all()
            claimed = await self._lease(conn, head, owner, now, claim_next_for)
        return status, (claimed[0] if claimed else None)

    async def release(self, owner: str) -> None:
        """Give back every lease ``owner`` holds (a worker stopping with posts in flight)."""
        d = webhook_deliveries
        async with self._db.write() as conn:
            await conn.execute(
                sa.update(d)
                .where(d.c.lease_owner == owner, d.c.status == _PENDING)
                .values(lease_owner=None, lease_expires_at=None)
            )

    async def next_due_at(self, now: datetime) -> datetime | None:
        """When the next claimable delivery falls due (None: nothing queued)."""
        d = webhook_deliveries
        async with self._db.read() as conn:
            due: datetime | None = (
                await conn.execute(
                    sa.select(sa.func.min(d.c.next_attempt_at, type_=UTCDateTime())).where(
                        _claimable(now)
                    )
                )
            ).scalar()
        return due
