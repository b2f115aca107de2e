"""Webhook delivery figures: commit-to-receipt latency and drain throughput of the durable queue.

In one process: a store on SQLite (and PostgreSQL when ``--postgres URL`` is given), the
notification writer, the delivery worker, and a real receiver (uvicorn on a local port) that
verifies every signature. Per database:

- latency: events committed at a steady rate, one subscription; time from the commit to the
  receiver's receipt (p50/p99);
- drain: a backlog of events for several subscriptions, then the worker started; deliveries per
  second until the backlog is empty (each subscription in order, subscriptions in parallel);
- scrape: ``/metrics`` state refresh and rendering with 300 proxies of 2 instances each.

The figures are written to ``bench/results/webhooks-<database>.json``.

Usage: ``python bench/webhooks.py [--events 300] [--subscriptions 10] [--postgres URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from _report import Cell, Table, save

from proxy_failover.adapters.metrics import Metrics
from proxy_failover.adapters.webhooks import DeliveryWorker
from proxy_failover.bootstrap import open_service
from proxy_failover.core import webhooks
from proxy_failover.core.model import Notification
from proxy_failover.store.deliveries import DeliveryQueue
from proxy_failover.store.gauges import Gauges
from proxy_failover.store.notifications import NotificationLog
from proxy_failover.store.repository import Store
from proxy_failover.store.webhooks import WebhookStore

SECRET = "bench-webhook-secret"


class Receiver:
    """Answers 204 to every POST and notes when each delivery id first arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.bad_signatures = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if not webhooks.verify(
            SECRET, headers["x-pfo-timestamp"], body, headers["x-pfo-signature"], datetime.now(UTC)
        ):
            self.bad_signatures += 1
        self.arrived.setdefault(headers["x-pfo-delivery"], time.time())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def _serve(receiver: Receiver) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    config = uvicorn.Config(receiver, host="127.0.0.1", port=0, lifespan="off", log_level="error")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
        await asyncio.sleep(0.01)
    port: int = server.servers[0].sockets[0].getsockname()[1]
    return server, task, port


async def _emit(store: Store, proxy: str, epoch: int) -> float:
    committed_at = time.time()
    async with store.write() as unit:
        unit.notify(Notification("failover.completed", proxy, epoch, datetime.now(UTC), {}))
    return committed_at


async def _wait_until(condition: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("deliveries did not all arrive")
        await asyncio.sleep(0.005)


async def bench(url: str, events: int, subscriptions: int) -> list[list[Cell]]:
    store = Store(url)
    await store.migrate()
    webhook_store, queue = WebhookStore(store.engine), DeliveryQueue(store.engine)
    store.notification_writers.append(NotificationLog(store.engine).write_notifications)
    receiver = Receiver()
    server, task, port = await _serve(receiver)
    rows: list[list[Cell]] = []
    try:
        hook = f"http://127.0.0.1:{port}/hook"
        now = datetime.now(UTC)
        await webhook_store.create_subscription(
            "lat",
            "bench",
            hook,
            SECRET,
            None,
            now,
            include_health_detail=True,  # an admin's
        )
        worker = DeliveryWorker(queue)
        worker.start()
        committed: list[float] = []
        for epoch in range(events):
            committed.append(await _emit(store, "lat", epoch))
            worker.wake()  # as the service's change listener does after each commit
            await asyncio.sleep(0.01)  # ~100 events/s
        await _wait_until(lambda: len(receiver.arrived) >= events, 60)
        await worker.stop()
        delivered = await webhook_store.list_deliveries("lat", limit=events)
        latencies = sorted(
            (receiver.arrived[d.id] - committed[n]) * 1000
            for n, d in enumerate(reversed(delivered))
        )
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        rows.append(
            [
                "latency, 1 subscription, ~100 events/s",
                events,
                round(p50, 1),
                round(p99, 1),
                None,
                None,
            ]
        )

        receiver.arrived.clear()
        for _ in range(subscriptions):
            await webhook_store.create_subscription(
                "drain", "bench", hook, SECRET, None, now, include_health_detail=True
            )
        for epoch in range(events):
            await _emit(store, "drain", epoch)
        total = events * subscriptions
        worker = DeliveryWorker(queue)
        started = time.perf_counter()
        worker.start()
        await _wait_until(lambda: len(receiver.arrived) >= total, 300)
        elapsed = time.perf_counter() - started
        await worker.stop()
        rows.append(
            [
                f"drain, {subscriptions} subscriptions",
                total,
                None,
                None,
                round(total / elapsed),
                round(elapsed, 1),
            ]
        )
        if receiver.bad_signatures:
            rows.append(["BAD SIGNATURES", receiver.bad_signatures, None, None, None, None])
    finally:
        server.should_exit = True
        await task
        await store.close()
    return rows


async def scrape(url: str, proxies: int = 300) -> list[Cell]:
    """Median time of a ``/metrics`` refresh + render over ``proxies`` proxies of 2 instances."""
    async with open_service(url) as service:
        for p in range(proxies):
            for i in range(2):
                await service.register_proxy_instance(
                    f"scrape-{p}", "bench", {"instanceName": f"i{i}"}
                )
        metrics, gauges = Metrics(), Gauges(service.store.engine)
        times = []
        for _ in range(5):
            started = time.perf_counter()
            await metrics.refresh(gauges)
            size = len(metrics.render())
            times.append((time.perf_counter() - started) * 1000)
    median = statistics.median(times)
    return [f"{proxies} proxies x 2 instances", size // 1024, round(median, 1)]


COLUMNS = ["run", "deliveries", "p50 ms", "p99 ms", "deliveries/s", "seconds"]
FORMATS = ["", ",", ".1f", ".1f", ",", ".1f"]


def markdown(columns: list[str], rows: list[list[Cell]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--subscriptions", type=int, default=10)
    parser.add_argument("--postgres", help="a PostgreSQL URL of an empty database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        targets = [("sqlite", f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")]
        if args.postgres:
            targets.append(("postgres", args.postgres))
        for name, url in targets:
            rows = await bench(url, args.events, args.subscriptions)
            scraped = await scrape(url)
            print(f"\n{name}\n\n{markdown(COLUMNS, rows)}\n")
            scrape_columns = ["/metrics refresh + render", "KiB", "median ms"]
            print(markdown(scrape_columns, [scraped]))
            tables = [
                Table("deliveries", COLUMNS, rows, FORMATS),
                Table("/metrics scrape", scrape_columns, [scraped], ["", ",", ".1f"]),
            ]
            label = {"sqlite": "SQLite", "postgres": "PostgreSQL"}[name]
            headline = {
                f"webhook commit → signed receipt on {label}, p50 / p99": (
                    f"{rows[0][2]} / {rows[0][3]} ms"
                )
            }
            save(f"webhooks-{name}", title="Webhooks", tables=tables, headline=headline)


if __name__ == "__main__":
    asyncio.run(main())
