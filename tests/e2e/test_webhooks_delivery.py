"""Notification log, webhook store, delivery queue and worker with real parts: SQLite/PostgreSQL,
a real HTTP receiver.

Notifications go in through the store's write unit of work (as the service's do), so these tests
cover the writer running inside the change's transaction as well as the worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from proxy_failover.adapters.webhooks import DeliveryWorker
from proxy_failover.core.model import Notification
from proxy_failover.core.webhooks import ClaimedDelivery, DeliveryStatus
from proxy_failover.store import database
from proxy_failover.store.audit import current_actor
from proxy_failover.store.deliveries import DeliveryQueue
from proxy_failover.store.repository import Store
from tests.helpers.clock import FakeClock
from tests.helpers.notifications import Repositories
from tests.helpers.outbound import LOOPBACK_ALLOWED
from tests.helpers.processes import free_port, wait_for
from tests.helpers.webhook_receiver import WebhookReceiver

SECRET = "a-webhook-secret-of-some-length"
PROXY = "edge-1"


def _note(kind: str, epoch: int, **data: object) -> Notification:
    return Notification(kind, PROXY, epoch, datetime.now(UTC), dict(data))


async def _emit(store: Store, *notes: Notification) -> None:
    """Commit notifications the way a use case does: through a write unit of work."""
    async with store.write() as unit:
        unit.notify(*notes)


async def _worker_running(worker: DeliveryWorker) -> AsyncIterator[DeliveryWorker]:
    worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


async def test_receiver_down_then_up_gets_every_delivery_signed_in_order(
    store: Store, repos: Repositories
) -> None:
    receiver = WebhookReceiver(SECRET)  # port reserved, not listening yet
    sub = await repos.webhooks.create_subscription(
        PROXY, "alice", receiver.url, SECRET, None, datetime.now(UTC)
    )
    await _emit(store, _note("instance.unhealthy", 1, instanceId="a"))
    await _emit(store, _note("failover.completed", 2, targetInstanceId="b"))
    worker = DeliveryWorker(
        repos.queue, time_scale=0.001, poll_interval_seconds=0.05, guard=LOOPBACK_ALLOWED
    )
    async for _ in _worker_running(worker):

        async def failed_twice() -> bool:
            return (await repos.webhooks.list_deliveries(PROXY))[-1].attempts >= 2

        await wait_for(failed_twice, within=10)
        await receiver.start()
        try:
            await wait_for(lambda: _count(receiver, 2), within=15)
        finally:
            await receiver.stop()

    assert all(r.signature_ok for r in receiver.received)
    assert [r.payload["type"] for r in receiver.accepted] == [
        "instance.unhealthy",
        "failover.completed",
    ]
    assert [r.payload["epoch"] for r in receiver.accepted] == [1, 2]
    first = receiver.accepted[0]
    assert first.headers["x-pfo-event"] == "instance.unhealthy"
    assert set(first.payload) == {"id", "type", "proxyId", "occurredAt", "epoch", "data"}
    deliveries = await repos.webhooks.list_deliveries(PROXY)
    assert {d.status for d in deliveries} == {DeliveryStatus.DELIVERED}
    assert {d.subscription_id for d in deliveries} == {sub.id}
    oldest = deliveries[-1]
    assert oldest.attempts == len(oldest.attempt_log) >= 3
    assert all(not a.success and a.status_code is None for a in oldest.attempt_log[:-1])
    assert "ConnectError" in (oldest.attempt_log[0].error or "")
    assert oldest.attempt_log[-1].success
    assert oldest.attempt_log[-1].status_code == 200


async def _count(receiver: WebhookReceiver, n: int) -> bool:
    return len(receiver.accepted) >= n


async def test_only_subscriptions_made_by_admins_receive_health_check_detail(
    store: Store, repos: Repositories
) -> None:
    """SPEC §7: non-admins never see lastError/lastLatencyMs, in a webhook no more than the API."""
    owners = WebhookReceiver(SECRET)
    admins = WebhookReceiver(SECRET)
    await owners.start()
    await admins.start()
    now = datetime.now(UTC)
    await repos.webhooks.create_subscription(PROXY, "alice", owners.url, SECRET, None, now)
    await repos.webhooks.create_subscription(
        PROXY, "root", admins.url, SECRET, None, now, include_health_detail=True
    )
    await _emit(
        store,
        _note("instance.unhealthy", 1, instanceId="a", lastError="refused", lastLatencyMs=2.0),
    )
    worker = DeliveryWorker(repos.queue, poll_interval_seconds=0.05, guard=LOOPBACK_ALLOWED)
    try:
        async for _ in _worker_running(worker):
            await wait_for(lambda: _count(owners, 1), within=10)
            await wait_for(lambda: _count(admins, 1), within=10)
    finally:
        await owners.stop()
        await admins.stop()
    assert owners.accepted[0].signature_ok
    assert owners.accepted[0].payload["data"] == {"instanceId": "a"}
    assert admins.accepted[0].payload["data"] == {
        "instanceId": "a",
        "lastError": "refused",
        "lastLatencyMs": 2.0,
    }


async def test_next_delivery_waits_until_the_previous_one_succeeded(
    store: Store, repos: Repositories
) -> None:
    receiver = await WebhookReceiver(SECRET, fail_first=2).start()
    try:
        await repos.webhooks.create_subscription(
            PROXY, "alice", receiver.url, SECRET, ["failover.completed"], datetime.now(UTC)
        )
        await _emit(
            store,
            _note("failover.completed", 1),
            _note("instance.healthy", 1),  # not subscribed: never queued
            _note("failover.completed", 2),
            _note("failover.completed", 3),
        )
        worker = DeliveryWorker(
            repos.queue, time_scale=0.001, poll_interval_seconds=0.05, guard=LOOPBACK_ALLOWED
        )
        async for _ in _worker_running(worker):
            await wait_for(lambda: _count(receiver, 3), within=10)
    finally:
        await receiver.stop()
    # Epoch 1 was refused twice and retried before epoch 2 was ever sent.
    assert [r.payload["epoch"] for r in receiver.received] == [1, 1, 1, 2, 3]
    assert len({r.delivery_id for r in receiver.accepted}) == 3
    assert len(await repos.webhooks.list_deliveries(PROXY)) == 3


async def test_two_workers_share_the_queue_without_duplicates_or_reordering(
    store: Store, repos: Repositories
) -> None:
    receivers = [await WebhookReceiver(SECRET).start() for _ in range(3)]
    try:
        for receiver in receivers:
            await repos.webhooks.create_subscription(
                PROXY, "alice", receiver.url, SECRET, None, datetime.now(UTC)
            )
        for epoch in range(1, 11):
            await _emit(store, _note("failover.completed", epoch))
        workers = [
            DeliveryWorker(
                DeliveryQueue(store.engine),
                batch_size=2,
                poll_interval_seconds=0.02,
                guard=LOOPBACK_ALLOWED,
            )
            for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        try:

            async def all_delivered() -> bool:
                return all(len(r.accepted) >= 10 for r in receivers)

            await wait_for(all_delivered, within=20)
        finally:
            for worker in workers:
                await worker.stop()
    finally:
        for receiver in receivers:
            await receiver.stop()
    for receiver in receivers:
        assert [r.payload["epoch"] for r in receiver.received] == list(range(1, 11))
        assert all(r.signature_ok for r in receiver.received)


async def test_a_hanging_receiver_holds_back_only_its_own_subscription(
    store: Store, repos: Repositories
) -> None:
    hanging = await WebhookReceiver(SECRET).start()
    healthy = await WebhookReceiver(SECRET).start()
    hanging.answering.clear()
    worker = DeliveryWorker(
        repos.queue, timeout_seconds=30, poll_interval_seconds=0.05, guard=LOOPBACK_ALLOWED
    )
    try:
        for receiver in (hanging, healthy):
            await repos.webhooks.create_subscription(
                PROXY, "alice", receiver.url, SECRET, None, datetime.now(UTC)
            )
        await _emit(store, _note("failover.completed", 1))
        await _emit(store, _note("failover.completed", 2))
        async for _ in _worker_running(worker):
            await wait_for(lambda: _count(healthy, 2), within=10)
            assert len(hanging.received) == 1  # its first delivery is still unanswered
            assert hanging.accepted == []
            hanging.answering.set()
            await wait_for(lambda: _count(hanging, 2), within=10)
    finally:
        await hanging.stop()
        await healthy.stop()
    assert [r.payload["epoch"] for r in hanging.accepted] == [1, 2]


async def test_delivery_is_dead_after_24h_of_hourly_retries_and_redeliver_revives_it(
    store: Store, repos: Repositories
) -> None:
    closed_port = free_port()
    url = f"http://127.0.0.1:{closed_port}/hook"
    await repos.webhooks.create_subscription(PROXY, "alice", url, SECRET, None, datetime.now(UTC))
    await _emit(store, _note("redundancy.degraded", 4))
    t0 = datetime.now(UTC)
    clock = FakeClock(now=t0)
    worker = DeliveryWorker(repos.queue, clock=clock, guard=LOOPBACK_ALLOWED)
    attempts = 0
    while True:
        assert await worker.run_once() == 1
        attempts += 1
        (delivery,) = await repos.webhooks.list_deliveries(PROXY)
        if delivery.status is not DeliveryStatus.PENDING:
            break
        assert delivery.next_attempt_at is not None
        clock.now = delivery.next_attempt_at - timedelta(milliseconds=1)
        assert await worker.run_once() == 0  # not due yet
        clock.now = delivery.next_attempt_at
    assert delivery.status is DeliveryStatus.DEAD
    assert attempts == delivery.attempts == len(delivery.attempt_log) == 28
    offsets = [(a.attempted_at - t0).total_seconds() for a in delivery.attempt_log]
    assert offsets[:6] == pytest.approx([0, 1, 6, 36, 336, 3936], abs=0.01)
    assert offsets[-1] <= 24 * 3600
    assert await worker.run_once() == 0  # dead deliveries are never claimed

    clock.now = datetime.now(UTC)  # receivers refuse stale timestamps: sign with real time
    revived = await repos.webhooks.redeliver(PROXY, delivery.id, clock.now)
    assert revived is not None
    assert revived.status is DeliveryStatus.PENDING
    assert revived.id == delivery.id
    assert await repos.webhooks.redeliver("other-proxy", delivery.id, clock.now) is None
    receiver = await WebhookReceiver(SECRET, port=closed_port).start()
    try:
        assert await worker.run_once() == 1
    finally:
        await receiver.stop()
        await worker.stop()
    (done,) = await repos.webhooks.list_deliveries(PROXY)
    assert done.status is DeliveryStatus.DELIVERED
    assert done.attempts == 29
    assert receiver.accepted[0].delivery_id == delivery.id


async def test_removed_subscription_cancels_pending_deliveries_and_gets_no_new_ones(
    store: Store, repos: Repositories
) -> None:
    now = datetime.now(UTC)
    sub = await repos.webhooks.create_subscription(
        PROXY, "alice", "http://127.0.0.1:9/x", SECRET, None, now
    )
    await _emit(store, _note("failover.started", 1))
    assert await repos.webhooks.delete_subscription(PROXY, sub.id, now)
    assert not await repos.webhooks.delete_subscription(PROXY, sub.id, now)
    await _emit(store, _note("failover.completed", 1))
    (delivery,) = await repos.webhooks.list_deliveries(PROXY)
    assert delivery.status is DeliveryStatus.CANCELLED
    assert await repos.webhooks.list_subscriptions(PROXY) == []
    assert await repos.webhooks.redeliver(PROXY, delivery.id, now) is None
    worker = DeliveryWorker(repos.queue, guard=LOOPBACK_ALLOWED)
    assert await worker.run_once() == 0


async def test_a_failing_writer_transaction_leaves_no_delivery(
    store: Store, repos: Repositories
) -> None:
    now = datetime.now(UTC)
    await repos.webhooks.create_subscription(
        PROXY, "alice", "http://127.0.0.1:9/x", SECRET, None, now
    )

    class Boom(Exception):
        pass

    async def change_that_fails() -> None:
        async with store.write() as unit:
            unit.notify(_note("failover.completed", 1))
            raise Boom

    with pytest.raises(Boom):
        await change_that_fails()
    assert await repos.webhooks.list_deliveries(PROXY) == []
    assert await repos.gauges.backlog() == {}
    await _emit(store, _note("failover.completed", 2))
    assert await repos.gauges.backlog() == {PROXY: 1}


async def test_a_finished_delivery_hands_its_worker_the_next_due_one_of_its_subscription(
    store: Store, repos: Repositories
) -> None:
    """``record_attempt(claim_next_for=...)``: once a delivery is done, its subscription's next
    one is claimed in the same transaction when it is due, and only then."""
    start = datetime.now(UTC)
    url = "http://127.0.0.1:9/x"
    await repos.webhooks.create_subscription(PROXY, "alice", url, SECRET, None, start)
    await _emit(store, *(_note("failover.completed", epoch) for epoch in (1, 2, 3, 4)))
    queue, later = repos.queue, start + timedelta(hours=1)

    async def attempt(
        delivery: ClaimedDelivery, *, success: bool, now: datetime
    ) -> tuple[DeliveryStatus, ClaimedDelivery | None]:
        return await queue.record_attempt(
            delivery,
            "w1",
            now,
            success=success,
            status_code=None,
            error=None,
            latency_ms=1.0,
            next_attempt_at=None if success else now + timedelta(minutes=5),
            claim_next_for=30,
            now=now,
        )

    (first,) = await queue.claim_due("w1", later, 30)  # one in flight per subscription
    # A failure leaves the delivery the head: nothing else is claimed.
    assert await attempt(first, success=False, now=later) == (DeliveryStatus.PENDING, None)
    (first_again,) = await queue.claim_due("w1", later + timedelta(minutes=6), 30)
    assert first_again.id == first.id
    # Delivered: the next one is due and the head now: claimed at once, by this worker.
    status, second = await attempt(first_again, success=True, now=later + timedelta(minutes=6))
    assert status is DeliveryStatus.DELIVERED
    assert second is not None
    assert await queue.claim_due("w2", later + timedelta(minutes=6), 30) == []
    # Delivered, but the next one is not due at ``now``: left to the worker's schedule.
    assert await attempt(second, success=True, now=start - timedelta(seconds=1)) == (
        DeliveryStatus.DELIVERED,
        None,
    )
    (third,) = await queue.claim_due("w1", later, 30)
    status, fourth = await attempt(third, success=True, now=later)
    assert fourth is not None
    # The last one done: nothing left to claim.
    assert await attempt(fourth, success=True, now=later) == (DeliveryStatus.DELIVERED, None)
    in_order = [d.id for d in reversed(await repos.webhooks.list_deliveries(PROXY))]
    assert in_order == [first.id, second.id, third.id, fourth.id]
    assert {d.status for d in await repos.webhooks.list_deliveries(PROXY)} == {
        DeliveryStatus.DELIVERED
    }


async def test_system_notifications_are_audited_and_api_ones_are_not(
    store: Store, repos: Repositories
) -> None:
    await _emit(store, _note("failover.completed", 3, eventId="ev-1", triggeredBy="system"))
    token = current_actor.set("alice")
    try:
        await _emit(store, _note("instance.unhealthy", 3, instanceId="i-1"))
    finally:
        current_actor.reset(token)
    (entry,) = await repos.audit.list_audit(PROXY)
    assert (entry.actor, entry.action, entry.target) == ("system", "failover.completed", "ev-1")
    assert entry.details["epoch"] == 3


async def test_concurrent_audit_rows_commit_together_and_each_call_waits_for_its_row(
    store: Store, repos: Repositories
) -> None:
    from proxy_failover.core.webhooks import AuditEntry

    def entry(index: int) -> AuditEntry:
        return AuditEntry(
            occurred_at=datetime.now(UTC),
            actor="alice",
            action=f"PUT /thing/{index}",
            result="success",
            proxy_id=PROXY,
            target=None,
            status_code=200,
            request_id=f"req-{index}",
        )

    async def record_then_read(index: int) -> bool:
        await repos.audit.record_audit(entry(index))
        # committed by the time the call returns: a fresh read sees it
        return any(e.request_id == f"req-{index}" for e in await repos.audit.list_audit(PROXY, 100))

    commits: list[object] = []
    sa.event.listen(store.engine.sync_engine, "commit", commits.append)
    # a unit of work holds the write gate (SQLite; PostgreSQL has none) while 20 calls arrive
    async with database.write_gate(store.engine):
        calls = [asyncio.create_task(record_then_read(i)) for i in range(20)]
        await asyncio.sleep(0)  # one loop turn: each call runs up to its first wait
    assert all(await asyncio.gather(*calls))
    rows = await repos.audit.list_audit(PROXY, 100)
    assert sorted(e.request_id or "" for e in rows) == sorted(f"req-{i}" for i in range(20))
    if store.dialect_name == "sqlite":
        assert len(commits) == 1  # the first call led one batch; the other 19 joined it
