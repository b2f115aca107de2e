"""Engine ticks with a fake clock and scripted probe results, on the real service and a temporary
SQLite database: decisions and their sentences, schedules, batching, recoveries.

The service is the production one (its compare-and-swap re-checks, bulk probe path and change
counters included); only the network (``ScriptedProber``) and the clock are fakes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest

from proxy_failover.bootstrap import open_service
from proxy_failover.core.model import (
    CheckResult,
    DecisionAction,
    EventStatus,
    EventType,
    FailoverEvent,
    HealthState,
    HealthStatus,
    Instance,
    ReasonCode,
)
from proxy_failover.engine import Engine, EngineSettings, Outcome
from proxy_failover.service import ProxyFailoverService
from tests.helpers.clock import FakeClock
from tests.helpers.scenario import ADMIN, OWNER
from tests.helpers.scripted_prober import ScriptedProber

#: First probes at once; routine results recorded after 1 ms of real time, not 250 ms.
QUICK = EngineSettings(first_probe_spread=0, flush_window=0.001)


class Harness:
    """One proxy ``p`` on the real service; the engine is its change listener."""

    def __init__(self, service: ProxyFailoverService, clock: FakeClock) -> None:
        self.clock = clock
        self.service = service
        self.prober = ScriptedProber(clock)
        self.batches: list[int] = []
        self.engine = self.make_engine(QUICK)
        record = service.record_probe_results

        async def counted(results: Sequence[tuple[str, CheckResult]]) -> list[HealthState | None]:
            self.batches.append(len(results))  # a spy: the real method does the work
            return await record(results)

        service.record_probe_results = counted  # type: ignore[method-assign]

    def make_engine(self, settings: EngineSettings) -> Engine:
        self.engine = Engine(
            self.service, self.prober, settings, clock=self.clock, rng=random.Random(7)
        )
        self.service.on_change = self.engine.notify
        return self.engine

    async def configure(self, proxy_id: str = "p", **config: Any) -> None:
        values = {"healthCheckIntervalSeconds": 1.0, "healthCheckTimeoutSeconds": 0.5, **config}
        await self.service.create_failover_configuration(proxy_id, OWNER, values)

    async def add(self, name: str, priority: int, proxy_id: str = "p", **fields: Any) -> Instance:
        fields.setdefault("endpoint", f"{name}:80")
        fields = {k: v for k, v in fields.items() if v is not None}
        data = {"instanceName": name, "priority": priority, **fields}
        return await self.service.register_proxy_instance(proxy_id, OWNER, data)

    async def step(self, seconds: float = 0.0) -> list[Outcome]:
        """Advance the clock, run a tick, let its probes finish, run the tick they woke."""
        self.clock.advance(seconds)
        outcomes = await self.engine.tick(self.clock.now)
        await self.engine.wait_for_probes()
        outcomes += await self.engine.tick(self.clock.now)
        await self.engine.wait_for_probes()
        return outcomes

    async def steps(self, count: int, seconds: float = 1.1) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for _ in range(count):
            outcomes += await self.step(seconds)
        return outcomes

    async def active_id(self, proxy_id: str = "p") -> str | None:
        status = await self.service.get_redundancy_status(proxy_id)
        return status.active_instance_id if status is not None else None

    async def events(self, **filters: Any) -> list[FailoverEvent]:
        """The proxy's events, oldest first."""
        found = await self.service.get_failover_events("p", 1000, **filters)
        return sorted(found, key=lambda e: (e.created_at, e.completed_at or e.created_at))


@pytest.fixture
async def make_harness(sqlite_url: str) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    """Harnesses on one real service over a fresh SQLite file, with a clock that moves only
    when told (``FakeClock`` with no step)."""
    clock = FakeClock(step=timedelta(0))
    async with open_service(sqlite_url, clock=clock, migrate=False) as service:

        async def make(**config: Any) -> Harness:
            harness = Harness(service, clock)
            await harness.configure(**config)
            return harness

        yield make


def applied(outcomes: list[Outcome]) -> list[Outcome]:
    return [
        o
        for o in outcomes
        if o.decision is not None and o.decision.action is not DecisionAction.NONE
    ]


async def activated(h: Harness) -> None:
    outcomes = await h.step()
    [activation] = applied(outcomes)
    assert activation.decision is not None
    assert activation.decision.action is DecisionAction.ACTIVATE


async def test_activates_best_instance_once_all_have_had_a_first_probe(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness()
    a, b, _ = await h.add("a", 1), await h.add("b", 2), await h.add("c", 3)
    h.prober.down.add(a.id)
    outcomes = await h.step()
    [activation] = applied(outcomes)
    assert activation.decision is not None
    assert activation.decision.reason == "no active instance: activating b"
    assert await h.active_id() == b.id
    assert activation.event is not None
    assert activation.event.triggered_by == "system"


async def test_activation_after_a_restart_waits_for_the_probes_the_engine_just_started(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness(healthCheckIntervalSeconds=2.0, healthCheckTimeoutSeconds=1.0)
    a, b = await h.add("a", 1), await h.add("b", 2)
    h.clock.advance(3600)  # registered long ago, never probed (the engine was down)
    h.prober.held[a.id] = asyncio.Event()  # a's first answer is still on its way
    await h.engine.tick(h.clock.now)  # both first probes start

    async def b_probed() -> bool:
        return (await h.service.get_instance(b.id)).health_status is HealthStatus.HEALTHY

    await _until(b_probed)
    [waiting] = [o for o in await h.engine.tick(h.clock.now) if o.decision is not None]
    assert waiting.decision is not None
    assert waiting.decision.reason == (
        "no active instance: waiting for the first probe of a before activating"
    )
    h.prober.held[a.id].set()
    await h.engine.wait_for_probes()
    [activation] = applied(await h.step())
    assert activation.decision is not None
    assert activation.decision.reason == "no active instance: activating a"  # not b, first
    assert await h.active_id() == a.id


async def test_unhealthy_active_fails_over_to_next_priority_after_threshold(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness(unhealthyThreshold=3)
    a, b, _ = await h.add("a", 1), await h.add("b", 2), await h.add("c", 3)
    await activated(h)
    h.prober.down.add(a.id)
    assert applied(await h.steps(2)) == []  # two failures: below the threshold
    [failover] = applied(await h.steps(1))
    assert failover.decision is not None
    assert failover.decision.reason_code is ReasonCode.ACTIVE_UNHEALTHY
    assert failover.decision.reason == "active a unhealthy (3 failures): failing over to b"
    assert failover.event is not None
    assert failover.event.status is EventStatus.COMPLETED
    assert await h.active_id() == b.id


async def test_round_robin_fails_over_to_the_next_after_the_source(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness(failoverStrategy="round_robin", unhealthyThreshold=1)
    a, b, c = await h.add("a", 1), await h.add("b", 2), await h.add("c", 3)
    await activated(h)
    active = await h.active_id()
    event = await h.service.execute_failover("p", ADMIN, active, b.id, "test setup")
    await h.service.complete_failover_event(event.id, "completed")
    h.prober.down.add(b.id)
    [failover] = applied(await h.steps(1))
    assert failover.decision is not None
    assert failover.decision.target_instance_id == c.id
    assert a.id != c.id


async def test_flapping_active_never_fails_over(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness(unhealthyThreshold=2, healthyThreshold=2, enableAutoFailback=True)
    a, _ = await h.add("a", 1), await h.add("b", 2)
    await activated(h)
    h.prober.script[a.id] = [False, True] * 15
    outcomes = await h.steps(30)
    assert applied(outcomes) == []
    assert await h.active_id() == a.id
    assert [e.event_type for e in await h.events()] == [EventType.FAILOVER]  # the activation


@pytest.mark.parametrize("failback", [False, True])
async def test_recovered_preferred_instance_fails_back_only_when_enabled(
    make_harness: Callable[..., Awaitable[Harness]], failback: bool
) -> None:
    h = await make_harness(
        unhealthyThreshold=1,
        healthyThreshold=1,
        enableAutoFailback=failback,
        failbackDelaySeconds=2.0,
    )
    a, b = await h.add("a", 1), await h.add("b", 2)
    await activated(h)
    h.prober.down.add(a.id)
    await h.steps(2)
    assert await h.active_id() == b.id
    h.prober.down.clear()
    outcomes = await h.steps(4)
    decisions = [o.decision for o in applied(outcomes)]
    if failback:
        assert [d.reason_code for d in decisions if d] == [ReasonCode.FAILBACK]
        assert await h.active_id() == a.id
        assert (await h.events())[-1].event_type is EventType.FAILBACK
    else:
        assert decisions == []
        assert await h.active_id() == b.id


async def test_reported_unhealthy_wakes_the_engine_without_waiting_for_a_period(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness(healthCheckIntervalSeconds=30.0, healthCheckTimeoutSeconds=5.0)
    a, b = await h.add("a", 1), await h.add("b", 2)
    await activated(h)
    h.clock.advance(0.01)
    await h.service.update_instance_health(a.id, "unhealthy")
    [failover] = applied(await h.engine.tick(h.clock.now))
    assert failover.decision is not None
    assert failover.decision.reason_code is ReasonCode.ACTIVE_UNHEALTHY
    assert await h.active_id() == b.id
    assert failover.event is not None
    assert failover.event.duration_ms == 0  # detected and committed at the same fake instant


async def test_a_started_switchover_wakes_no_evaluation_and_its_completion_does(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    # failover.started cannot change the decision (tests/unit/test_failover.py): no wake-up;
    # completing the switch (a failback may have waited for it) wakes one.
    h = await make_harness(healthCheckIntervalSeconds=30.0, healthCheckTimeoutSeconds=5.0)
    a, b = await h.add("a", 1), await h.add("b", 2)
    await activated(h)
    await h.step(0.01)
    evaluations = h.engine.stats.evaluations
    event = await h.service.execute_failover("p", ADMIN, a.id, b.id)
    await h.step(0.01)
    assert h.engine.stats.evaluations == evaluations
    await h.service.complete_failover_event(event.id, "completed")
    await h.step(0.01)
    assert h.engine.stats.evaluations == evaluations + 1
    assert await h.active_id() == b.id


async def test_draining_the_active_instance_moves_the_role(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness()
    a, b = await h.add("a", 1), await h.add("b", 2)
    await activated(h)
    await h.service.update_instance(a.id, OWNER, {"adminState": "drain"})
    [moved] = applied(await h.engine.tick(h.clock.now))
    assert moved.decision is not None
    assert moved.decision.reason_code is ReasonCode.ACTIVE_UNAVAILABLE
    assert await h.active_id() == b.id


async def test_maintenance_and_endpointless_instances_are_not_probed(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness()
    a = await h.add("a", 1)
    m = await h.add("m", 2, adminState="maintenance")
    n = await h.add("n", 3, endpoint=None)
    await h.steps(3)
    assert h.prober.probed_ids() == {a.id}
    assert {m.id, n.id}.isdisjoint(h.prober.probed_ids())
    await h.service.update_instance(a.id, OWNER, {"adminState": "maintenance"})
    before = len(h.prober.calls)
    await h.steps(3)
    assert len(h.prober.calls) == before
    assert a.id in h.prober.forgotten


async def test_probe_intervals_follow_fast_and_down_intervals(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness(
        healthCheckIntervalSeconds=1.0,
        fastIntervalSeconds=0.2,
        downIntervalSeconds=3.0,
        unhealthyThreshold=3,
    )
    a = await h.add("a", 1)
    await h.step()
    h.prober.down.add(a.id)
    for _ in range(80):  # 8 s in 0.1 s steps
        await h.step(0.1)
    times = [t for i, t in h.prober.calls if i == a.id]
    gaps = [round((y - x).total_seconds(), 1) for x, y in itertools.pairwise(times)]
    # healthy: ~1 s; pending (1, 2 failures): ~0.2 s; unhealthy: ~3 s; each ±10 % jitter
    assert 0.9 <= gaps[0] <= 1.2
    assert all(0.1 <= g <= 0.3 for g in gaps[1:3])
    assert gaps[3:]
    assert all(2.7 <= g <= 3.4 for g in gaps[3:])


async def test_configuration_change_applies_on_the_next_evaluation(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness(healthCheckIntervalSeconds=5.0, healthCheckTimeoutSeconds=1.0)
    a = await h.add("a", 1)
    await h.step()
    await h.configure(healthCheckIntervalSeconds=0.5, healthCheckTimeoutSeconds=0.2)
    await h.step(0.01)
    before = len(h.prober.calls)
    for _ in range(20):
        await h.step(0.1)
    assert len([c for c in h.prober.calls[before:] if c[0] == a.id]) >= 3


async def test_recovery_url_is_posted_with_backoff_then_event_fails_when_spent(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness(
        unhealthyThreshold=1,
        maxRecoveryAttempts=2,
        recoveryBackoffSeconds=2.0,
        downIntervalSeconds=1.0,
    )
    a = await h.add("a", 1, recoveryUrl="http://a/recover")
    await h.add("b", 2)
    await activated(h)
    h.prober.down.add(a.id)
    outcomes = await h.steps(1)
    assert [o.note for o in outcomes if o.note] == [
        "recovery started",
        f"recovery attempt 1 for {a.id}",
    ]
    await h.steps(1)
    assert len(h.prober.recovery_posts) == 1  # backoff not elapsed yet
    await h.steps(4)
    assert [p for _, p in h.prober.recovery_posts] == [
        {"instanceId": a.id, "proxyId": "p", "attempt": 1},
        {"instanceId": a.id, "proxyId": "p", "attempt": 2},
    ]
    [recovery] = await h.events(event_type=EventType.RECOVERY)
    assert recovery.status is EventStatus.FAILED
    assert recovery.error_message == "instance still unhealthy after 2 recovery attempts"
    await h.steps(4)
    assert len(h.prober.recovery_posts) == 2  # spent: no new event until health moves


async def test_recovery_event_completes_when_instance_is_healthy_again(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness(unhealthyThreshold=1, healthyThreshold=2, maxRecoveryAttempts=5)
    a = await h.add("a", 1, recoveryUrl="http://a/recover")
    await h.step()
    h.prober.down.add(a.id)
    await h.steps(1)
    h.prober.down.clear()
    await h.steps(3)
    [recovery] = await h.events(event_type=EventType.RECOVERY)
    assert recovery.status is EventStatus.COMPLETED
    assert recovery.target_instance_id == a.id


async def test_one_broken_proxy_does_not_stop_the_others(
    make_harness: Callable[..., Awaitable[Harness]], caplog: pytest.LogCaptureFixture
) -> None:
    h = await make_harness()
    await h.add("a", 1)
    await h.configure("q")
    q1 = await h.add("q1", 1, proxy_id="q")
    real_load = h.service.load_snapshot

    async def broken_load(proxy_id: str) -> Any:  # the database fails for p only
        if proxy_id == "p":
            raise RuntimeError("disk on fire")
        return await real_load(proxy_id)

    h.service.load_snapshot = broken_load  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="proxy_failover.engine"):
        outcomes = await h.steps(3)
    assert {o.error for o in outcomes if o.proxy_id == "p"} == {"RuntimeError: disk on fire"}
    assert await h.active_id("q") == q1.id
    assert len([r for r in caplog.records if "disk on fire" in r.getMessage()]) == 1


async def test_stale_switch_events_are_closed_by_the_tick(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness()
    a, b = await h.add("a", 1), await h.add("b", 2)
    await activated(h)
    manual = await h.service.execute_failover("p", ADMIN, a.id, b.id, "manual")
    assert manual.status is EventStatus.IN_PROGRESS
    h.clock.advance(400)  # left in progress past 300 s
    outcomes = await h.steps(6)
    assert [o.note for o in outcomes if o.event and o.event.id == manual.id] == [
        "stale event closed"
    ]


async def test_dropped_probe_connection_brings_the_next_probe_forward(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness(healthCheckIntervalSeconds=4.0, healthCheckTimeoutSeconds=1.0)
    a = await h.add("a", 1)
    await h.step()
    assert len(h.prober.calls) == 1
    start = h.prober.calls[0][1]
    await h.step(0.5)
    assert len(h.prober.calls) == 1  # next regular probe is ~4 s away
    assert h.prober.on_connection_lost is not None
    h.prober.on_connection_lost(a.id)  # at 0.5 s: earliest allowed is 0.25 x 4 s = 1 s
    await h.step(0.3)
    assert len(h.prober.calls) == 1
    await h.step(0.25)
    assert [round((t - start).total_seconds(), 2) for _, t in h.prober.calls] == [0.0, 1.05]


async def test_timeouts_of_probes_started_late_are_not_counted_against_the_instance(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness(unhealthyThreshold=1)
    a = await h.add("a", 1)
    await h.step()
    h.prober.script[a.id] = [False]  # one failed answer ...
    h.prober.duration = 0.5  # ... at the timeout: it timed out
    h.clock.advance(2.5)  # the probe due at ~1 s starts 1.5 s late: the engine was overloaded
    await h.engine.tick(h.clock.now)
    await h.engine.wait_for_probes()
    assert h.engine.stats.inconclusive == 1
    instance = await h.service.get_instance(a.id)
    assert instance.consecutive_failures == 0
    assert instance.health_status is HealthStatus.HEALTHY
    h.prober.script[a.id] = [False]
    for _ in range(30):  # the next one starts on time (0.1 s steps): its timeout counts
        await h.step(0.1)
        if (await h.service.get_instance(a.id)).health_status is HealthStatus.UNHEALTHY:
            break
    assert (await h.service.get_instance(a.id)).health_status is HealthStatus.UNHEALTHY
    assert h.engine.stats.inconclusive == 1


async def test_instance_that_habitually_drops_idle_connections_gets_no_probe_storm(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness(healthCheckIntervalSeconds=4.0, healthCheckTimeoutSeconds=1.0)
    a = await h.add("a", 1)
    await h.step()
    assert h.prober.on_connection_lost is not None
    for _ in range(4):  # each probe's connection is dropped right after: early probe each time?
        h.prober.on_connection_lost(a.id)
        await h.step(1.05)
    # two early probes found it fine; then drops no longer bring probes forward
    assert h.engine.stats.early_probes == 2
    assert len(h.prober.calls) == 3


async def test_routine_results_are_recorded_in_batches(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness()
    for n in range(5):
        await h.add(f"i{n}", n + 1)
    await activated(h)
    h.batches.clear()
    await h.step(1.1)  # five successes of steadily healthy instances: one batch
    assert h.batches == [5]


async def _until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Let the loop run until ``condition`` holds (a bounded number of turns, no wall clock)."""
    for _ in range(10_000):
        if await condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_a_result_that_may_move_health_is_recorded_at_once_with_the_pending_ones(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness()
    h.make_engine(EngineSettings(first_probe_spread=0, flush_window=3600))
    a, b = await h.add("a", 1), await h.add("b", 2)
    await activated(h)  # first probes (unknown instances) are not routine: recorded at once
    h.batches.clear()
    calls = len(h.prober.calls)
    h.clock.advance(1.1)
    await h.engine.tick(h.clock.now)

    async def both_probed() -> bool:
        return len(h.prober.calls) == calls + 2

    await _until(both_probed)
    for _ in range(100):
        await asyncio.sleep(0)
    assert h.batches == []  # routine successes wait for the (1 h) window
    # a failing result (here a new instance's first probe) cannot wait: it takes them along
    c = await h.add("c", 3)
    h.prober.down.add(c.id)
    h.clock.advance(1.1)
    await h.engine.tick(h.clock.now)

    async def c_failed() -> bool:
        return (await h.service.get_instance(c.id)).consecutive_failures == 1

    await _until(c_failed)
    assert h.batches == [3]
    assert (await h.service.get_instance(a.id)).total_requests == 2
    assert (await h.service.get_instance(b.id)).total_requests == 2
    await h.engine.shutdown()  # cancel the hour-long flush timer


async def test_concurrent_flushes_record_disjoint_proxies_without_waiting_for_each_other(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness(unhealthyThreshold=3)
    await h.configure("q")
    a, b = await h.add("a", 1), await h.add("b", 1, proxy_id="q")
    h.make_engine(EngineSettings(first_probe_spread=0, flush_window=0.001, concurrent_flushes=2))
    await h.steps(1)
    assert await h.active_id("p") == a.id
    assert await h.active_id("q") == b.id
    record = h.service.record_probe_results
    gate = asyncio.Event()
    entered: list[set[str]] = []

    async def held_for_p(results: Sequence[tuple[str, CheckResult]]) -> list[HealthState | None]:
        ids = {instance_id for instance_id, _ in results}
        entered.append(ids)
        if a.id in ids:
            await gate.wait()  # p's transaction is slow ...
        return await record(results)

    h.service.record_probe_results = held_for_p  # type: ignore[method-assign]
    h.prober.down.update({a.id, b.id})  # failures: recorded at once, each
    h.prober.held[b.id] = asyncio.Event()  # b answers once p's transaction has begun
    h.clock.advance(1.1)
    await h.engine.tick(h.clock.now)

    async def p_recording() -> bool:
        return entered == [{a.id}]

    await _until(p_recording)
    h.prober.held[b.id].set()

    async def q_recorded() -> bool:
        return (await h.service.get_instance(b.id)).consecutive_failures == 1

    await _until(q_recorded)  # ... q's is recorded meanwhile, by a second flush
    assert entered == [{a.id}, {b.id}]
    assert (await h.service.get_instance(a.id)).consecutive_failures == 0
    gate.set()
    await h.engine.wait_for_probes()
    assert (await h.service.get_instance(a.id)).consecutive_failures == 1
