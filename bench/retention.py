"""Retention figures: how fast the engine leader's batches clear a backlog, how long one run holds
the database, and what a run costs when there is nothing to prune.

Per database: a proxy whose history is half older than ``PFO_RETENTION_DAYS`` (metric samples,
finished and open events, audit rows, finished webhook deliveries with two attempts each and
their event-log entries), then ``service.prune_history`` called back to back, as the engine does
while a backlog remains (one batch of at most 1,000 rows per table, each its own transaction).
A call's time bounds the longest any one of its five transactions held the write lock.

The figures are written to ``bench/results/retention-<database>.json``.

Usage: ``python bench/retention.py [--rows 100000] [--postgres URL]`` (URL of an empty database).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _report import Cell, Table, save

from proxy_failover.bootstrap import open_service
from proxy_failover.core.retention import RetentionPolicy
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

POLICY = RetentionPolicy()
CHUNK = 5000


def _id() -> str:
    return str(uuid.uuid4())


async def _insert(
    service: ProxyFailoverService, table: sa.Table, rows: list[dict[str, Any]]
) -> None:
    for start in range(0, len(rows), CHUNK):
        async with service.store.engine.begin() as conn:
            await conn.execute(sa.insert(table), rows[start : start + CHUNK])


async def seed(service: ProxyFailoverService, rows: int) -> int:
    """``rows`` metric samples and a share of every other table, half of each older than the
    retention; returns how many rows are old (prunable)."""
    await service.create_failover_configuration("p", "bench", {})
    instance = await service.register_proxy_instance("p", "bench", {"instanceName": "a"})
    now = datetime.now(UTC)  # the service's clock is the wall clock here
    old, young = now - timedelta(days=POLICY.days + 1), now - timedelta(days=1)
    stamps = [old if n % 2 == 0 else young for n in range(rows)]
    await _insert(
        service,
        metrics,
        [
            {"id": _id(), "instance_id": instance.id, "proxy_id": "p", "user_id": "bench"}
            | {"cpu_percent": 1.0, "recorded_at": at}
            for at in stamps
        ],
    )
    await _insert(
        service,
        events,
        [
            {"id": _id(), "proxy_id": f"q{n}", "user_id": "bench", "event_type": "recovery"}
            | {"reason": "bench", "triggered_by": "system", "epoch": 1, "created_at": at}
            | {"status": "in_progress" if n % 10 == 0 else "completed"}
            for n, at in enumerate(stamps[: rows // 4])
        ],
    )
    await _insert(
        service,
        audit_log,
        [
            {"occurred_at": at, "actor": "bench", "action": "x", "result": "success"}
            for at in stamps[: rows // 4]
        ],
    )
    sub = _id()
    async with service.store.engine.begin() as conn:
        await conn.execute(
            sa.insert(webhook_subscriptions).values(
                id=sub,
                proxy_id="p",
                user_id="bench",
                url="https://h.example/",
                secret="s" * 32,
                created_at=now,
            )
        )
    deliveries = sorted(stamps[: rows // 10])
    log = [
        {"id": _id(), "proxy_id": "p", "type": "instance.healthy", "epoch": 1}
        | {"occurred_at": at, "body": "{}"}
        for at in deliveries
    ]
    await _insert(service, notification_log, log)
    delivery_rows = [
        {"id": _id(), "subscription_id": sub, "notification_id": entry["id"], "proxy_id": "p"}
        | {"event_type": "instance.healthy", "status": "delivered", "attempts": 2}
        | {"created_at": entry["occurred_at"], "last_attempt_at": entry["occurred_at"]}
        for entry in log
    ]
    await _insert(service, webhook_deliveries, delivery_rows)
    await _insert(
        service,
        webhook_delivery_attempts,
        [
            {"id": _id(), "delivery_id": d["id"], "attempt": k, "attempted_at": d["created_at"]}
            | {"success": k == 2, "latency_ms": 1.0}
            for d in delivery_rows
            for k in (1, 2)
        ],
    )
    old_rows = (rows + 1) // 2  # samples
    old_rows += sum(1 for n, at in enumerate(stamps[: rows // 4]) if at == old and n % 10)
    old_rows += sum(1 for at in stamps[: rows // 4] if at == old)  # audit
    old_deliveries = sum(1 for at in deliveries if at == old)
    return old_rows + 2 * old_deliveries  # deliveries and their log entries (attempts apart)


async def measure(url: str, rows: int) -> tuple[list[list[Cell]], dict[str, Any]]:
    async with open_service(url) as service:
        started = time.perf_counter()
        old = await seed(service, rows)
        seeded_s = time.perf_counter() - started
        calls: list[float] = []
        pruned = 0
        started = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            counts = await service.prune_history(POLICY)
            calls.append((time.perf_counter() - t0) * 1000)
            pruned += sum(counts.values())
            if max(counts.values()) < POLICY.batch:
                break
        drain_s = time.perf_counter() - started
        idle: list[float] = []
        for _ in range(20):  # steady state: nothing old left, the young half stays
            t0 = time.perf_counter()
            counts = await service.prune_history(POLICY)
            idle.append((time.perf_counter() - t0) * 1000)
            assert not any(counts.values())
    ordered = sorted(calls)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    row: list[Cell] = [
        rows,
        pruned,
        len(calls),
        round(statistics.median(calls), 1),
        round(p99, 1),
        round(max(calls), 1),
        round(pruned / drain_s),
        round(statistics.median(idle), 2),
    ]
    assert pruned == old, (pruned, old)
    return [row], {"seeded_s": seeded_s}


COLUMNS = [
    "samples",
    "rows pruned",
    "runs",
    "run p50 ms",
    "run p99 ms",
    "run max ms",
    "rows/s back to back",
    "idle run ms",
]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--postgres", help="a PostgreSQL URL of an empty database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        targets = [("sqlite", f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}")]
        if args.postgres:
            targets.append(("postgres", args.postgres))
        for name, url in targets:
            rows, _ = await measure(url, args.rows)
            label = {"sqlite": "SQLite", "postgres": "PostgreSQL"}[name]
            print(label, dict(zip(COLUMNS, rows[0], strict=True)))
            save(
                f"retention-{name}",
                title="Retention",
                tables=[
                    Table(
                        f"{label}: a backlog of half-expired history pruned back to back",
                        COLUMNS,
                        rows,
                    )
                ],
                notes=[
                    "One run = one batch of at most 1,000 rows per table (events, samples, "
                    "audit, deliveries with their attempts, event log), each its own "
                    "transaction; its time bounds the longest write-lock hold.",
                    "The engine runs back to back only in this benchmark: while a backlog "
                    "remains it runs once a second, otherwise once a minute.",
                    "Idle run: the same call once nothing is old, with the young half left.",
                ],
            )


if __name__ == "__main__":
    asyncio.run(main())
