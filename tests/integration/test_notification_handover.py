"""The notification log hands each committed change's entries to this process's live streams from
memory (``NotificationLog.on_logged``), on SQLite and PostgreSQL: the entries exactly as the log
stores them, with the proxy's entry they follow; nothing for a change that rolled back; whether
webhook deliveries were queued. And a stream's feed (``adapters.webhooks.Feed``) that holds too
much falls back to reading the log."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy_failover.adapters.webhooks import Feed
from proxy_failover.core.model import Notification
from proxy_failover.core.webhooks import LoggedBatch, StoredNotification
from proxy_failover.service import ProxyFailoverService
from proxy_failover.store.notifications import NotificationLog
from tests.helpers.scenario import ADMIN, OWNER, proxy_with

Handed = list[tuple[Sequence[LoggedBatch], bool]]


def _logging(service: ProxyFailoverService) -> tuple[NotificationLog, Handed]:
    handed: Handed = []
    log = NotificationLog(
        service.store.engine, on_logged=lambda batches, queued: handed.append((batches, queued))
    )
    service.store.notification_writers.append(log.write_notifications)
    return log, handed


async def test_a_commit_hands_over_its_entries_as_the_log_stores_them(
    service: ProxyFailoverService,
) -> None:
    log, handed = _logging(service)
    made = await proxy_with(service, "p1", ["a", "b"])
    before = await log.last_notification_seq("p1")
    handed.clear()

    event = await service.execute_failover("p1", ADMIN, None, made["a"].id)
    ((batches, queued),) = handed
    assert queued is False  # no subscription: nothing for the delivery worker
    (batch,) = batches
    assert (batch.proxy_id, batch.after_seq) == ("p1", before)
    assert list(batch.entries) == await log.notifications_after("p1", before)
    assert batch.entries[-1].type == "failover.started"

    handed.clear()
    await service.complete_failover_event(event.id, "completed")
    ((batches, _),) = handed
    (following,) = batches
    assert following.after_seq == batch.entries[-1].seq  # follows on from the previous change
    assert [entry.type for entry in following.entries] == ["failover.completed"]
    assert list(following.entries) == await log.notifications_after("p1", following.after_seq)


async def test_a_change_that_rolls_back_hands_over_nothing(
    service: ProxyFailoverService,
) -> None:
    log, handed = _logging(service)
    made = await proxy_with(service, "p1", ["a"])
    before = await log.last_notification_seq("p1")

    async def refuse(_conn: AsyncConnection, _notes: Sequence[Notification]) -> None:
        raise RuntimeError("outbox unavailable")

    service.store.notification_writers.append(refuse)  # runs after the log, in the same commit
    handed.clear()
    with pytest.raises(RuntimeError):
        await service.execute_failover("p1", ADMIN, None, made["a"].id)
    assert handed == []
    assert await log.last_notification_seq("p1") == before


async def test_the_handover_says_when_deliveries_were_queued(
    service: ProxyFailoverService,
) -> None:
    _, handed = _logging(service)
    made = await proxy_with(service, "p1", ["a"])
    await proxy_with(service, "p2", ["z"])
    await service.create_webhook_subscription(
        "p1", OWNER, "https://hooks.example.com/pfo", "s" * 32, ["failover.started"]
    )
    handed.clear()
    await service.execute_failover("p1", ADMIN, None, made["a"].id)
    assert [queued for _, queued in handed] == [True]
    handed.clear()
    await service.update_instance_health(made["a"].id, "unhealthy")  # not subscribed to
    assert [queued for _, queued in handed] == [False]


async def test_a_woken_stream_takes_its_batch_before_the_committing_caller_goes_on(
    service: ProxyFailoverService,
) -> None:
    """The hand-over runs right after the commit and the committer yields the loop once: a
    stream waiting on its feed has taken the commit's entries (and would have written them)
    before the call that committed returns to its caller (its answer, audit row, listeners)."""
    log, _ = _logging(service)
    made = await proxy_with(service, "p1", ["a", "b"])
    feed = Feed()

    def hand_over(batches: Sequence[LoggedBatch], _queued: bool) -> None:
        for batch in batches:
            feed.offer(batch)

    log.on_logged = hand_over
    taken: list[list[str]] = []

    async def stream() -> None:
        await feed.woken.wait()
        batches, _ = feed.take()
        taken.append([entry.type for batch in batches for entry in batch.entries])

    waiting = asyncio.create_task(stream())
    await asyncio.sleep(0)  # the stream waits on its feed
    event = await service.execute_failover("p1", ADMIN, None, made["a"].id)
    assert taken, "the stream had not run when execute returned"
    assert taken[0][-1] == "failover.started"
    assert event.status.value == "in_progress"
    await waiting


def _batch(seq: int) -> LoggedBatch:
    return LoggedBatch("p1", seq - 1, (StoredNotification(seq, f"id-{seq}", "t", "{}"),))


async def test_a_feed_that_holds_too_much_reads_the_log_instead() -> None:
    feed = Feed()
    assert feed.take() == ([], False)
    feed.offer(_batch(1))
    assert feed.woken.is_set()
    assert feed.take() == ([_batch(1)], False)
    assert not feed.woken.is_set()
    for seq in range(2, Feed.LIMIT + 3):  # a stream that does not read (a slow client)
        feed.offer(_batch(seq))
    assert feed.take() == ([], True)  # nothing held: the log has it all
    feed.read_log()  # news from another replica
    assert feed.take() == ([], True)


async def test_a_batch_follows_its_proxys_own_last_entry_not_another_proxys(
    service: ProxyFailoverService,
) -> None:
    log, handed = _logging(service)
    made = await proxy_with(service, "p1", ["a", "b"])
    await proxy_with(service, "p2", ["c"])  # p2's entries are the log's newest
    before = await log.last_notification_seq("p1")
    assert 0 < before < await log.last_notification_seq("p2")
    handed.clear()

    await service.execute_failover("p1", ADMIN, None, made["a"].id)
    ((batches, _),) = handed
    (batch,) = batches
    assert batch.after_seq == before
