"""Webhooks as the API sees them: subscriptions, and each delivery with its attempts.

Deliveries are queued by the notification writer (``store.notifications``), in the transaction of
the change, and worked off by the delivery workers through ``store.deliveries``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from proxy_failover.core import retention
from proxy_failover.core.webhooks import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Subscription,
)
from proxy_failover.store import database
from proxy_failover.store.prepared import PreparedStatement
from proxy_failover.store.rows import new_id
from proxy_failover.store.tables import (
    webhook_deliveries,
    webhook_delivery_attempts,
    webhook_subscriptions,
)

_PENDING = DeliveryStatus.PENDING.value


async def retire_subscriptions(
    conn: AsyncConnection, now: datetime, proxy_id: str, *only: sa.ColumnElement[bool]
) -> int:
    """Soft-delete the proxy's live subscriptions (all, or those matching ``only``) and cancel
    their pending deliveries, in the caller's transaction; their delivery history stays readable.
    Returns how many subscriptions were removed."""
    s = webhook_subscriptions
    live = sa.and_(s.c.proxy_id == proxy_id, s.c.deleted_at.is_(None), *only)
    ids = list((await conn.execute(sa.select(s.c.id).where(live))).scalars())
    if not ids:
        return 0
    await conn.execute(sa.update(s).where(s.c.id.in_(ids)).values(deleted_at=now))
    await conn.execute(
        sa.update(webhook_deliveries)
        .where(
            webhook_deliveries.c.subscription_id.in_(ids),
            webhook_deliveries.c.status == _PENDING,
        )
        .values(
            status=DeliveryStatus.CANCELLED.value,
            next_attempt_at=None,
            lease_owner=None,
            lease_expires_at=None,
        )
    )
    return len(ids)


# --- row <-> value ---------------------------------------------------------------------------


def _subscription_from(row: Mapping[str, Any]) -> Subscription:
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
        seq=row["seq"],
    )


#: The live (not deleted) subscriptions of a proxy, oldest first. Prepared: every change that
#: notifies reads it (``store.notifications``), most often to find none.
ACTIVE_SUBSCRIPTIONS = PreparedStatement(
    "active_subscriptions",
    sa.select(webhook_subscriptions)
    .where(
        webhook_subscriptions.c.proxy_id == sa.bindparam("p_proxy_id"),
        webhook_subscriptions.c.deleted_at.is_(None),
    )
    .order_by(webhook_subscriptions.c.created_at, webhook_subscriptions.c.id),
)
_SUBSCRIPTION_NAMES = tuple(column.name for column in webhook_subscriptions.c)


async def subscriptions_of(
    connection: AsyncConnection, proxy_ids: Sequence[str]
) -> list[Subscription]:
    """The live subscriptions of these proxies (each proxy's oldest first), read in the
    caller's transaction."""
    found: list[Subscription] = []
    for proxy_id in proxy_ids:
        rows = await ACTIVE_SUBSCRIPTIONS.rows(
            connection, _SUBSCRIPTION_NAMES, {"p_proxy_id": proxy_id}
        )
        found += [_subscription_from(row) for row in rows]
    return found


class WebhookStore:
    """Subscriptions, deliveries and attempts, on the store's engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._db = database.EngineAccess(engine)

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
            id=new_id(),
            proxy_id=proxy_id,
            user_id=user_id,
            url=url,
            events=None if events is None else tuple(events),
            created_at=now,
        )
        async with self._db.write() as conn:
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
        async with self._db.read() as conn:
            return await subscriptions_of(conn, [proxy_id])

    async def delete_subscription(self, proxy_id: str, subscription_id: str, now: datetime) -> bool:
        """Remove a subscription and cancel its pending deliveries; False when there is none."""
        async with self._db.write() as conn:
            removed = await retire_subscriptions(
                conn, now, proxy_id, webhook_subscriptions.c.id == subscription_id
            )
        return removed > 0

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
        before_seq: int | None = None,
    ) -> list[Delivery]:
        """Newest first, each with its attempts (oldest first); ``before_seq``: a page's end."""
        d = webhook_deliveries
        statement = sa.select(d).where(d.c.proxy_id == proxy_id)
        if before_seq is not None:
            statement = statement.where(d.c.seq < before_seq)
        if status is not None:
            statement = statement.where(d.c.status == status.value)
        if subscription_id is not None:
            statement = statement.where(d.c.subscription_id == subscription_id)
        async with self._db.read() as conn:
            return await self._deliveries(conn, statement.order_by(d.c.seq.desc()).limit(limit))

    async def _deliveries(self, conn: AsyncConnection, statement: sa.Select[Any]) -> list[Delivery]:
        """The deliveries ``statement`` selects, in its order, each with its attempts."""
        rows = (await conn.execute(statement)).mappings().all()
        attempts = await self._attempts_for(conn, [row["id"] for row in rows])
        return [_delivery_from(row, attempts[row["id"]]) for row in rows]

    async def prune_deliveries(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` finished deliveries (``core.retention.delivery_prunable`` with
        cut-off ``before``) and their attempts, in one short transaction; oldest first."""
        d = webhook_deliveries
        finished = sa.and_(
            database.unindexed(d.c.status).in_(sorted(retention.FINISHED_DELIVERY_STATUSES)),
            d.c.created_at < before,
            sa.or_(d.c.last_attempt_at.is_(None), d.c.last_attempt_at < before),
        )
        async with self._db.write() as conn:
            ids = list(
                (
                    await conn.execute(
                        sa.select(d.c.id).where(finished).order_by(d.c.created_at).limit(limit)
                    )
                )
                .scalars()
                .all()
            )
            if not ids:
                return 0
            attempts = webhook_delivery_attempts
            await conn.execute(sa.delete(attempts).where(attempts.c.delivery_id.in_(ids)))
            await conn.execute(sa.delete(d).where(d.c.id.in_(ids)))
            return len(ids)

    async def redeliver(self, proxy_id: str, delivery_id: str, now: datetime) -> Delivery | None:
        """Queue a delivery again, due now, with a fresh 24 h window; None if no such delivery.

        The delivery keeps its id (receivers de-duplicate by it, as with GitHub's redeliveries)
        and its attempt history. A delivery of a removed subscription cannot be redelivered.
        """
        async with self._db.write() as conn:
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
            (delivery,) = await self._deliveries(
                conn, sa.select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)
            )
        return delivery
