"""A flush batch takes pending results by proxy: whole proxies in the order they first had a
result waiting, the last one split to fit ``flush_chunk``, never a proxy another running flush
holds, and each proxy's results in arrival order."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from typing import Any, cast

from proxy_failover.core.model import CheckResult, FailoverConfig, HealthStatus
from proxy_failover.engine.ports import EngineStats
from proxy_failover.engine.recording import ProbeRecorder
from proxy_failover.engine.schedule import Probed
from proxy_failover.engine.settings import EngineSettings


def _recorder(chunk: int) -> ProbeRecorder:
    unused: Any = None
    return ProbeRecorder(
        unused,
        unused,
        unused,
        unused,
        EngineSettings(flush_chunk=chunk),
        unused,
        wake_proxy=unused,
        rescheduled=unused,
        track=unused,
    )


def _result(proxy_id: str, n: int) -> tuple[Probed, float, CheckResult]:
    config = FailoverConfig(proxy_id=proxy_id, user_id="u")
    probed = Probed(f"{proxy_id}-{n}", proxy_id, None, "x:1", config, HealthStatus.HEALTHY, 0, 1, 0)
    return (probed, float(n), CheckResult(True, 1.0))


def _names(batch: list[tuple[Probed, float, CheckResult]]) -> list[str]:
    return [probed.instance_id for probed, _, _ in batch]


def test_a_batch_takes_whole_proxies_and_skips_the_held_ones() -> None:
    recorder = _recorder(chunk=4)
    arrivals = [("p1", 0), ("p2", 0), ("p1", 1), ("p3", 0), ("p2", 1), ("p1", 2), ("p3", 1)]
    arrivals += [("p3", 2), ("p3", 3)]
    for proxy_id, n in arrivals:
        recorder._queue(_result(proxy_id, n))
    recorder._busy_proxies.add("p2")  # another flush is recording p2
    first = recorder._take_batch()
    assert _names(first) == ["p1-0", "p1-1", "p1-2", "p3-0"]  # p1 whole, p3 split to fit
    assert recorder._busy_proxies == {"p1", "p2", "p3"}
    assert recorder._take_batch() == []  # everything waiting is held by a running flush
    recorder._busy_proxies -= {"p2", "p3"}
    second = recorder._take_batch()
    assert _names(second) == ["p2-0", "p2-1", "p3-1", "p3-2"]
    recorder._busy_proxies -= {"p2", "p3"}
    assert _names(recorder._take_batch()) == ["p3-3"]
    assert recorder._pending_count == 0
    assert recorder._take_batch() == []


def test_batches_hand_out_every_result_exactly_once_in_order_per_proxy() -> None:
    rng = random.Random(7)
    recorder = _recorder(chunk=7)
    arrivals = [(f"p{rng.randrange(5)}", n) for n in range(200)]
    for proxy_id, n in arrivals:
        recorder._queue(_result(proxy_id, n))
    taken: list[str] = []
    while recorder._pending_count:
        batch = recorder._take_batch()
        assert 0 < len(batch) <= 7
        taken += _names(batch)
        recorder._busy_proxies.clear()  # that flush is done
    assert sorted(taken) == sorted(f"{p}-{n}" for p, n in arrivals)
    for proxy_id in {p for p, _ in arrivals}:
        mine = [int(name.split("-")[1]) for name in taken if name.startswith(proxy_id + "-")]
        assert mine == sorted(mine)


async def test_an_urgent_result_starts_no_flush_while_every_flush_runs() -> None:
    # the running flushes take it in their next batch; a task each would only return at once
    tracked: list[object] = []
    stats = EngineStats()
    recorder = ProbeRecorder(
        cast(Any, None),
        cast(Any, None),
        cast(Any, None),
        lambda: stats,
        EngineSettings(concurrent_flushes=2),
        lambda: datetime.now(UTC),
        wake_proxy=cast(Any, None),
        rescheduled=cast(Any, None),
        track=tracked.append,
    )
    probed, due, _ = _result("p1", 0)
    now = datetime.now(UTC)
    failed = CheckResult(False, 1.0, "connection refused")  # urgent: may move the state
    recorder._flushing = 2
    recorder._pooled_in_flight = 2
    recorder._answered(probed, due, now.timestamp(), now, failed)
    assert tracked == []
    assert recorder._pending_count == 1
    recorder._flushing = 1  # a slot is free: a flush is started for it
    recorder._answered(probed, due, now.timestamp(), now, failed)
    assert len(tracked) == 1
    for task in tracked:
        cast(asyncio.Task[None], task).cancel()
    await asyncio.gather(*cast(list[asyncio.Task[None]], tracked), return_exceptions=True)
