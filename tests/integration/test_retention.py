"""Retention on SQLite and PostgreSQL with a fake clock: old finished history goes in bounded
batches, open events and pending deliveries stay whatever their age, and what each prune
statement deletes is exactly what ``core.retention`` says (rows of every status and age).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from proxy_failover.bootstrap import build_leader, open_service
from proxy_failover.config import load_settings
from proxy_failover.core.retention import (
    RetentionPolicy,
    cutoffs,
    delivery_prunable,
    event_prunable,
    row_prunable,
)
from proxy_failover.engine import Engine, EngineSettings
from proxy_failover.service import ProxyFailoverService
from proxy_failover.store.tables import (
    audit_log,
    events,
    metrics,
    notification_log,
    webhook_deliveries,
    webhook_delivery_attempts,
    webhook_subscriptions,
)
from tests.helpers.clock import FakeClock
from tests.helpers.processes import wait_for
from tests.helpers.scenario import OWNER, proxy_with
from tests.helpers.scripted_prober import ScriptedProber

POLICY = RetentionPolicy(days=90, delivery_days=14, batch=7)
#: Ages in days around both cut-offs.
AGES = (0, 1, 13.9, 14.1, 89.9, 90.1, 400)


def _id() -> str:
    return str(uuid.uuid4())


async def _seed(service: ProxyFailoverService, now: datetime) -> None:
    """Rows of every status at every age, written straight into the tables."""
    instance = (await proxy_with(service, "p1", ["a"]))["a"]
    at = [now - timedelta(days=age) for age in AGES]
    event_rows, sample_rows, audit_rows, log_rows, delivery_rows, attempt_rows = (
        [] for _ in range(6)
    )
    sub = _id()
    for n, (stamp, status) in enumerate(
        itertools.product(at, ("pending", "in_progress", "completed", "failed"))
    ):
        event_rows.append(
            {
                "id": _id(),
                "proxy_id": f"q{n}",  # one open event per proxy at most (the unique index)
                "user_id": OWNER,
                "event_type": "failover",
                "reason": "seeded",
                "status": status,
                "triggered_by": "system",
                "epoch": 1,
                "created_at": stamp,
            }
        )
    for stamp in at:
        sample_rows.append(
            {"id": _id(), "instance_id": instance.id, "proxy_id": "p1", "user_id": OWNER}
            | {"cpu_percent": 1.0, "recorded_at": stamp}
        )
        audit_rows.append(
            {"occurred_at": stamp, "actor": OWNER, "action": "seed", "result": "success"}
        )
    for stamp in sorted(at):  # the log in time order, as it is written
        log_rows.append(
            {"id": _id(), "proxy_id": "p1", "type": "instance.healthy", "epoch": 1}
            | {"occurred_at": stamp, "body": "{}"}
        )
    referenced = itertools.cycle([row["id"] for row in log_rows])
    for stamp, last, status in itertools.product(
        at, [None, *at], ("pending", "delivered", "dead", "cancelled")
    ):
        if last is not None and last < stamp:
            continue
        delivery = _id()
        delivery_rows.append(
            {"id": delivery, "subscription_id": sub, "notification_id": next(referenced)}
            | {"proxy_id": "p1", "event_type": "instance.healthy", "status": status}
            | {"attempts": 0 if last is None else 2, "created_at": stamp, "last_attempt_at": last}
        )
        if last is not None:
            for attempt in (1, 2):
                attempt_rows.append(
                    {"id": _id(), "delivery_id": delivery, "attempt": attempt}
                    | {"attempted_at": last, "success": status == "delivered", "latency_ms": 1.0}
                )
    random.Random(3).shuffle(delivery_rows)  # age order is not insertion order
    async with service.store.engine.begin() as conn:
        await conn.execute(
            sa.insert(webhook_subscriptions).values(
                id=sub,
                proxy_id="p1",
                user_id=OWNER,
                url="https://h.example/",
                secret="s" * 32,
                created_at=now,
            )
        )
        for table, rows in (
            (events, event_rows),
            (metrics, sample_rows),
            (audit_log, audit_rows),
            (notification_log, log_rows),
            (webhook_deliveries, delivery_rows),
            (webhook_delivery_attempts, attempt_rows),
        ):
            await conn.execute(sa.insert(table), rows)


async def _rows(service: ProxyFailoverService, table: sa.Table) -> list[Any]:
    async with service.store.engine.connect() as conn:
        return list((await conn.execute(sa.select(table))).mappings().all())


async def test_old_finished_history_goes_in_bounded_batches_open_work_stays(
    service: ProxyFailoverService, clock: FakeClock
) -> None:
    clock.step = timedelta(0)
    now = clock.now
    await _seed(service, now)
    before = {t.name: await _rows(service, t) for t in (events, metrics, audit_log)}
    before_log = await _rows(service, notification_log)
    before_deliveries = await _rows(service, webhook_deliveries)
    cut = cutoffs(now, POLICY)

    calls = 0
    while True:
        pruned = await service.prune_history(POLICY)
        calls += 1
        assert all(0 <= n <= POLICY.batch for n in pruned.values())  # never more than a batch
        if max(pruned.values()) < POLICY.batch:
            break
    assert calls > 1  # the seed is larger than one batch: it took several short transactions

    kept_events = {row["id"] for row in await _rows(service, events)}
    expected = {
        row["id"]
        for row in before["proxy_failover_events"]
        if not event_prunable(row["status"], row["created_at"], cut.history)
    }
    assert kept_events == expected
    open_ids = {
        row["id"]
        for row in before["proxy_failover_events"]
        if row["status"] in ("pending", "in_progress")
    }
    assert len(open_ids) == 2 * len(AGES)
    assert open_ids <= kept_events

    kept_samples = {row["id"] for row in await _rows(service, metrics)}
    assert kept_samples == {
        row["id"]
        for row in before["proxy_instance_metrics"]
        if not row_prunable(row["recorded_at"], cut.history)
    }

    kept_audit = {row["id"] for row in await _rows(service, audit_log)}
    newest_audit = max(row["id"] for row in before["audit_log"])
    assert kept_audit == {
        row["id"]
        for row in before["audit_log"]
        if row["id"] == newest_audit or not row_prunable(row["occurred_at"], cut.history)
    }

    kept_deliveries = {row["id"]: row for row in await _rows(service, webhook_deliveries)}
    assert set(kept_deliveries) == {
        row["id"]
        for row in before_deliveries
        if not delivery_prunable(
            row["status"], row["created_at"], row["last_attempt_at"], cut.deliveries
        )
    }
    assert any(row["status"] == "pending" for row in kept_deliveries.values())
    attempts = await _rows(service, webhook_delivery_attempts)
    assert {row["delivery_id"] for row in attempts} <= set(kept_deliveries)  # none orphaned
    assert len(attempts) == sum(
        2 for row in kept_deliveries.values() if row["last_attempt_at"] is not None
    )

    still_referenced = {row["notification_id"] for row in kept_deliveries.values()}
    newest_seq = max(row["seq"] for row in before_log)
    kept_log = {row["id"] for row in await _rows(service, notification_log)}
    assert kept_log == {
        row["id"]
        for row in before_log
        if row["id"] in still_referenced
        or row["seq"] == newest_seq
        or not row_prunable(row["occurred_at"], cut.history)
    }

    # nothing left to do: another run deletes nothing
    assert set((await service.prune_history(POLICY)).values()) == {0}


async def test_the_newest_log_entry_and_audit_row_stay_so_ids_are_never_reused(
    service: ProxyFailoverService, clock: FakeClock
) -> None:
    """SQLite hands out max(rowid)+1: deleting the newest row would reuse its id for the next."""
    clock.step = timedelta(0)
    old = clock.now - timedelta(days=365)
    async with service.store.engine.begin() as conn:
        await conn.execute(
            sa.insert(notification_log),
            [
                {"id": _id(), "proxy_id": "p", "type": "t", "epoch": 1}
                | {"occurred_at": old, "body": "{}"}
                for _ in range(3)
            ],
        )
        await conn.execute(
            sa.insert(audit_log),
            [{"occurred_at": old, "actor": "a", "action": "x", "result": "ok"} for _ in range(3)],
        )
    newest_seq = max(row["seq"] for row in await _rows(service, notification_log))
    newest_audit = max(row["id"] for row in await _rows(service, audit_log))
    pruned = await service.prune_history(POLICY)
    assert (pruned["notifications"], pruned["audit"]) == (2, 2)
    assert [row["seq"] for row in await _rows(service, notification_log)] == [newest_seq]
    assert [row["id"] for row in await _rows(service, audit_log)] == [newest_audit]


async def test_the_engine_prunes_on_its_tick_and_again_soon_while_a_backlog_remains(
    service: ProxyFailoverService, clock: FakeClock
) -> None:
    clock.step = timedelta(0)
    await proxy_with(service, "p1", ["a"])
    instance_id = (await service.get_proxy_instances("p1"))[0].id
    for _ in range(POLICY.batch + 3):  # one batch and then some, recorded a long time ago
        await service.record_instance_metrics(instance_id, "p1", OWNER, {"cpuPercent": 1.0})
    clock.advance(91 * 86400)
    settings = EngineSettings(first_probe_spread=0, retention=POLICY, retention_period=60.0)
    engine = Engine(service, ScriptedProber(clock), settings, clock=clock)

    await engine.tick(clock.now)
    assert len(await service.get_instance_metrics(instance_id, 100)) == 3
    t = clock.now.timestamp()
    assert engine.next_deadline() <= t + settings.retention_backlog_period  # backlog: soon again

    clock.advance(settings.retention_backlog_period)
    await engine.tick(clock.now)
    assert await service.get_instance_metrics(instance_id, 100) == []
    clock.advance(1.0)
    await engine.tick(clock.now)  # nothing was left: the next run is a period away
    pruned_again = await service.prune_history(POLICY)
    assert set(pruned_again.values()) == {0}
    await engine.shutdown()


async def test_only_the_engine_leader_prunes_and_a_standby_takes_over(
    service: ProxyFailoverService, clock: FakeClock, database_url: str
) -> None:
    """Two ``serve``-style replicas on one database: the lease holder's engine prunes, the
    standby's service is never asked to; after the leader stops, the standby leads and prunes."""
    calls: dict[str, int] = {"a": 0, "b": 0}

    def spied(name: str, replica: ProxyFailoverService) -> ProxyFailoverService:
        prune = replica.prune_history

        async def counted(policy: RetentionPolicy) -> dict[str, int]:
            calls[name] += 1  # a spy: the real method does the work
            return await prune(policy)

        replica.prune_history = counted  # type: ignore[method-assign]
        return replica

    settings = load_settings(database_url=database_url, engine_lease_seconds=1.0)
    async with open_service(database_url, clock=clock, migrate=False) as other:
        leaders = {
            "a": build_leader(settings, spied("a", service)),
            "b": build_leader(settings, spied("b", other)),
        }
        tasks = [asyncio.create_task(leader.run()) for leader in leaders.values()]
        try:

            async def leading() -> str | None:
                names = [n for n, leader in leaders.items() if leader.is_leader]
                return names[0] if len(names) == 1 and calls[names[0]] else None

            first = await wait_for(leading)
            assert first is not None
            standby = "b" if first == "a" else "a"
            lease = leaders[first].lease
            assert lease is not None

            async def renewed() -> bool:
                current = leaders[first].lease
                return current is not None and current.expires_at > lease.expires_at

            await wait_for(renewed)  # a while of leading: the standby has not pruned meanwhile
            assert calls[standby] == 0
            leaders[first].stop()

            async def took_over() -> bool:
                return leaders[standby].is_leader and calls[standby] > 0

            await wait_for(took_over)
        finally:
            for leader in leaders.values():
                leader.stop()
            await asyncio.gather(*tasks)
