"""The live streams' shared watch of the event log (``NotificationLog.proxies_with_news``) on
SQLite and PostgreSQL: which proxies have news past a sequence number or since a time."""

from __future__ import annotations

import uuid
from datetime import timedelta

import sqlalchemy as sa

from proxy_failover.service import ProxyFailoverService
from proxy_failover.store.notifications import NotificationLog
from proxy_failover.store.tables import notification_log
from tests.helpers.clock import T0


def _entry(seq: int, proxy_id: str, seconds: float) -> dict[str, object]:
    return {
        "seq": seq,
        "id": str(uuid.uuid4()),
        "proxy_id": proxy_id,
        "type": "instance.healthy",
        "epoch": 1,
        "occurred_at": T0 + timedelta(seconds=seconds),
        "body": "{}",
    }


async def test_news_past_a_sequence_number_and_late_commits_since_a_time(
    service: ProxyFailoverService,
) -> None:
    log = NotificationLog(service.store.engine)
    assert await log.proxies_with_news(None) == (0, set())
    async with service.store.engine.begin() as conn:
        await conn.execute(
            sa.insert(notification_log),
            [_entry(1, "old", 0), _entry(2, "a", 100), _entry(5, "b", 101)],
        )
    assert await log.proxies_with_news(None) == (5, set())  # where a new watch starts
    assert await log.proxies_with_news(1) == (5, {"a", "b"})
    assert await log.proxies_with_news(1, batch=1) == (2, {"a"})  # the rest next time
    assert await log.proxies_with_news(5) == (5, set())  # nothing new: nothing woken
    # An entry committed late with a lower sequence number than one already seen...
    async with service.store.engine.begin() as conn:
        await conn.execute(sa.insert(notification_log), [_entry(4, "late", 102)])
    assert await log.proxies_with_news(5) == (5, set())  # ...is missed by the sequence alone
    since = T0 + timedelta(seconds=101.5)
    assert await log.proxies_with_news(5, since) == (5, {"late"})  # ...and found by its time
    assert await log.proxies_with_news(1, since) == (5, {"a", "b", "late"})
