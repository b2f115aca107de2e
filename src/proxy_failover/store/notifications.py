"""The notification log: every notification a change produced, durable with the change.

``NotificationLog.write_notifications`` is a ``store.NotificationWriter``: it runs inside the
transaction of the change that produced the notifications, so an event, its webhook deliveries and
the audit row of an automatic action are committed together with the change or not at all. Once
the change committed, it hands what it logged to ``on_logged`` (this process's live streams and
delivery worker) from memory; the streams read the log back by sequence number to resume, to catch
up, and for what other replicas commit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from proxy_failover.core import webhooks
from proxy_failover.core.model import Notification
from proxy_failover.core.webhooks import LoggedBatch, StoredNotification
from proxy_failover.store import audit, database, deliveries
from proxy_failover.store.prepared import PreparedStatement, bound_columns
from proxy_failover.store.repository import AfterCommit
from proxy_failover.store.rows import new_id
from proxy_failover.store.tables import notification_log, webhook_deliveries
from proxy_failover.store.webhooks import subscriptions_of

#: Told after a commit what it logged, one batch per proxy, and whether it queued webhook
#: deliveries; called on the committing thread (the engine's commits too).
LoggedListener = Callable[[Sequence[LoggedBatch], bool], None]

_n = notification_log
#: A proxy's newest entry: where a new stream starts.
LAST_SEQ = PreparedStatement(
    "notification_last_seq",
    sa.select(sa.func.max(_n.c.seq)).where(_n.c.proxy_id == sa.bindparam("p_proxy_id")),
)
_before = notification_log.alias("before")
#: An entry's insert, returning its ``seq`` and the ``seq`` of the proxy's entry just before it
#: (0: none). Run under the proxy's lock, inside the change's transaction, no other writer's
#: entry of that proxy can fall in between: the first entry's answer is what the change's
#: entries follow (``LoggedBatch.after_seq``), read in the insert's round trip.
INSERT_ENTRY = PreparedStatement(
    "notification_insert",
    sa.insert(_n)
    .values(bound_columns(_n, ("id", "proxy_id", "type", "epoch", "occurred_at", "body")))
    .returning(
        _n.c.seq,
        sa.select(sa.func.coalesce(sa.func.max(_before.c.seq), 0))
        # The inserted row's own ``seq``, spelled out: SQLAlchemy does not correlate a
        # subquery with an INSERT's table (it would add the table to the subquery's FROM).
        .where(
            _before.c.proxy_id == sa.bindparam("p_proxy_id"),
            _before.c.seq < sa.literal_column(f"{_n.name}.seq"),
        )
        .scalar_subquery(),
    ),
)


class NotificationLog:
    """Writes ``notification_log`` (with deliveries and system audit rows) and reads it back."""

    def __init__(self, engine: AsyncEngine, on_logged: LoggedListener | None = None) -> None:
        self._db = database.EngineAccess(engine)
        self.on_logged = on_logged

    async def write_notifications(
        self, connection: AsyncConnection, notifications: Sequence[Notification]
    ) -> AfterCommit | None:
        """Log each notification, queue a delivery per interested subscription, audit system acts.

        Runs before the change commits: all of it is durable exactly when the change is. Each
        entry's ``seq`` is read back, and with a proxy's first entry the ``seq`` of the proxy's
        entry before it: the change holds the proxy's lock, so no other writer's entry of that
        proxy can fall in between (``LoggedBatch``).
        """
        if not notifications:
            return None
        proxy_ids = sorted({n.proxy_id for n in notifications})
        subscriptions = await subscriptions_of(connection, proxy_ids)
        last: dict[str, int] = {}
        entries: dict[str, list[StoredNotification]] = {proxy_id: [] for proxy_id in proxy_ids}
        actor = audit.current_actor.get()
        queued = False
        for notification in notifications:
            event_id = new_id()
            body = webhooks.encode_payload(webhooks.build_payload(event_id, notification))
            rows = await INSERT_ENTRY.tuples(
                connection,
                {
                    "p_id": event_id,
                    "p_proxy_id": notification.proxy_id,
                    "p_type": notification.type,
                    "p_epoch": notification.epoch,
                    "p_occurred_at": notification.occurred_at,
                    "p_body": body,
                },
            )
            last.setdefault(notification.proxy_id, int(rows[0][1] or 0))
            entries[notification.proxy_id].append(
                StoredNotification(int(rows[0][0]), event_id, notification.type, body)
            )
            queued |= await deliveries.queue_deliveries(
                connection, subscriptions, notification, event_id
            )
            if actor is None:  # API calls are audited by the API itself, with their caller
                row = audit.system_row(notification, json.loads(body)["data"])
                await audit.insert_rows(connection, [row])
        listener = self.on_logged
        if listener is None:
            return None
        batches = tuple(
            LoggedBatch(proxy_id, last[proxy_id], tuple(logged))
            for proxy_id, logged in entries.items()
        )
        return lambda: listener(batches, queued)

    async def last_notification_seq(self, proxy_id: str) -> int:
        """Where a new stream starts: it sees only what happens after it connected."""
        async with self._db.read() as conn:
            found = await LAST_SEQ.tuples(conn, {"p_proxy_id": proxy_id})
        return int(found[0][0] or 0) if found else 0

    async def proxies_with_news(
        self, after_seq: int | None, since: datetime | None = None, batch: int = 1000
    ) -> tuple[int, set[str]]:
        """The log's newest ``seq`` and the proxies with entries past ``after_seq`` (None: just
        the newest ``seq``) or that occurred at or after ``since``: the live streams' shared
        watch for what other replicas commit, two short range reads on indexes (the sequence,
        the time) however many streams are open and however long the log. At most ``batch``
        entries past ``after_seq`` are read: the rest are the next call's news. ``since``
        catches a late commit: on PostgreSQL a transaction may commit an entry with a lower
        ``seq`` than one already seen."""
        n = notification_log
        async with self._db.read() as conn:
            if after_seq is None:
                newest = (await conn.execute(sa.select(sa.func.max(n.c.seq)))).scalar()
                return int(newest or 0), set()
            rows = (
                await conn.execute(
                    sa.select(n.c.seq, n.c.proxy_id)
                    .where(n.c.seq > after_seq)
                    .order_by(n.c.seq)
                    .limit(batch)
                )
            ).all()
            proxies = {row[1] for row in rows}
            if since is not None:
                recent = sa.select(n.c.proxy_id).where(n.c.occurred_at >= since).limit(batch)
                proxies.update((await conn.execute(recent)).scalars())
        return (int(rows[-1][0]) if rows else after_seq), proxies

    async def notifications_after(
        self, proxy_id: str, after_seq: int, limit: int = 100
    ) -> list[StoredNotification]:
        """The proxy's notifications with ``seq > after_seq``, oldest first."""
        n = notification_log
        async with self._db.read() as conn:
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


async def prune_notifications(engine: AsyncEngine, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` log entries that occurred before ``before`` (retention).

    An entry a webhook delivery still refers to stays (deliveries go first, by their own
    retention), and so does the newest entry: SQLite would otherwise hand its ``seq`` out again,
    and a stream resuming with an old ``Last-Event-ID`` would skip the new entry.
    """
    n = notification_log
    newest = sa.select(sa.func.max(n.c.seq)).scalar_subquery()
    referenced = (
        sa.select(webhook_deliveries.c.id)
        .where(webhook_deliveries.c.notification_id == n.c.id)
        .exists()
    )
    old = sa.and_(n.c.occurred_at < before, n.c.seq != newest, ~referenced)
    async with database.EngineAccess(engine).write() as conn:  # by the timestamp's index
        return await database.delete_batch(conn, n.c.seq, old, n.c.occurred_at, limit)
