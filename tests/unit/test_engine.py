"""Engine ticks with a fake clock and scripted probe results: decisions, reasons, schedules."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from proxy_failover.core.model import (
    AdminState,
    DecisionAction,
    EventStatus,
    EventType,
    FailoverConfig,
    FailoverStrategy,
    HealthStatus,
    Instance,
    ReasonCode,
)
from proxy_failover.engine import Engine, Outcome
from tests.helpers.clock import T0, FakeClock
from tests.helpers.memory_service import MemoryService
from tests.helpers.scripted_prober import ScriptedProber


class Harness:
    def __init__(self, **config: Any) -> None:
        self.clock = FakeClock()
        self.prober = ScriptedProber()
        self.prober.clock = self.clock
        self.service = MemoryService(self.clock)
        self.engine = Engine(
            self.service, self.prober, clock=self.clock, rng=random.Random(7), first_probe_spread=0
        )
        self.service.on_change = self.engine.notify
        defaults: dict[str, Any] = {
            "health_check_interval_seconds": 1.0,
            "health_check_timeout_seconds": 0.5,
        }
        self.config = FailoverConfig(proxy_id="p", user_id="u", **{**defaults, **config})
        self.service.add_proxy(self.config)

    def add(self, name: str, priority: int, **fields: Any) -> Instance:
        fields.setdefault("endpoint", f"{name}:80")
        return self.service.add_instance("p", name, priority=priority, **fields)

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

    def active_name(self) -> str | None:
        active = self.service.active_id("p")
        return self.service.instances[active].instance_name if active else None


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


async def test_activates_best_instance_once_all_have_had_a_first_probe() -> None:
    h = Harness()
    a, b, _ = h.add("a", 1), h.add("b", 2), h.add("c", 3)
    h.prober.down.add(a.id)
    outcomes = await h.step()
    [activation] = applied(outcomes)
    assert activation.decision is not None
    assert activation.decision.reason == "no active instance: activating b"
    assert h.service.active_id("p") == b.id
    assert activation.event is not None
    assert activation.event.triggered_by == "system"


async def test_unhealthy_active_fails_over_to_next_priority_after_threshold() -> None:
    h = Harness(unhealthy_threshold=3)
    a, b, _ = h.add("a", 1), h.add("b", 2), h.add("c", 3)
    await activated(h)
    h.prober.down.add(a.id)
    assert applied(await h.steps(2)) == []  # two failures: below the threshold
    [failover] = applied(await h.steps(1))
    assert failover.decision is not None
    assert failover.decision.reason_code is ReasonCode.ACTIVE_UNHEALTHY
    assert failover.decision.reason == "active a unhealthy (3 failures): failing over to b"
    assert failover.event is not None
    assert failover.event.status is EventStatus.COMPLETED
    assert h.service.active_id("p") == b.id


async def test_round_robin_fails_over_to_the_next_after_the_source() -> None:
    h = Harness(failover_strategy=FailoverStrategy.ROUND_ROBIN, unhealthy_threshold=1)
    a, b, c = h.add("a", 1), h.add("b", 2), h.add("c", 3)
    await activated(h)
    h.service.redundancy["p"] = h.service.redundancy["p"].__class__(
        "p", active_instance_id=b.id, epoch=5
    )
    h.prober.down.add(b.id)
    [failover] = applied(await h.steps(1))
    assert failover.decision is not None
    assert failover.decision.target_instance_id == c.id
    assert a.id != c.id


async def test_flapping_active_never_fails_over() -> None:
    h = Harness(unhealthy_threshold=2, healthy_threshold=2, enable_auto_failback=True)
    a, _ = h.add("a", 1), h.add("b", 2)
    await activated(h)
    h.prober.script[a.id] = [False, True] * 15
    outcomes = await h.steps(30)
    assert applied(outcomes) == []
    assert h.active_name() == "a"
    assert [e.event_type for e in h.service.events] == [EventType.FAILOVER]  # the activation


async def test_recovered_preferred_instance_fails_back_only_when_enabled() -> None:
    for failback in (False, True):
        h = Harness(
            unhealthy_threshold=1,
            healthy_threshold=1,
            enable_auto_failback=failback,
            failback_delay_seconds=2.0,
        )
        a, b = h.add("a", 1), h.add("b", 2)
        await activated(h)
        h.prober.down.add(a.id)
        await h.steps(2)
        assert h.service.active_id("p") == b.id
        h.prober.down.clear()
        outcomes = await h.steps(4)
        decisions = [o.decision for o in applied(outcomes)]
        if failback:
            assert [d.reason_code for d in decisions if d] == [ReasonCode.FAILBACK]
            assert h.service.active_id("p") == a.id
            assert h.service.events[-1].event_type is EventType.FAILBACK
        else:
            assert decisions == []
            assert h.service.active_id("p") == b.id


async def test_reported_unhealthy_wakes_the_engine_without_waiting_for_a_period() -> None:
    h = Harness(health_check_interval_seconds=30.0, health_check_timeout_seconds=5.0)
    a, b = h.add("a", 1), h.add("b", 2)
    await activated(h)
    h.clock.advance(0.01)
    h.service.report_health(a.id, HealthStatus.UNHEALTHY)
    [failover] = applied(await h.engine.tick(h.clock.now))
    assert failover.decision is not None
    assert failover.decision.reason_code is ReasonCode.ACTIVE_UNHEALTHY
    assert h.service.active_id("p") == b.id
    assert failover.event is not None
    assert failover.event.duration_ms == 0  # detected and committed at the same fake instant


async def test_draining_the_active_instance_moves_the_role() -> None:
    h = Harness()
    a, b = h.add("a", 1), h.add("b", 2)
    await activated(h)
    h.service.update(a.id, admin_state=AdminState.DRAIN)
    [moved] = applied(await h.engine.tick(h.clock.now))
    assert moved.decision is not None
    assert moved.decision.reason_code is ReasonCode.ACTIVE_UNAVAILABLE
    assert h.service.active_id("p") == b.id


async def test_maintenance_and_endpointless_instances_are_not_probed() -> None:
    h = Harness()
    a = h.add("a", 1)
    m = h.add("m", 2, admin_state=AdminState.MAINTENANCE)
    n = h.add("n", 3, endpoint=None)
    await h.steps(3)
    assert h.prober.probed_ids() == {a.id}
    assert {m.id, n.id}.isdisjoint(h.prober.probed_ids())
    h.service.update(a.id, admin_state=AdminState.MAINTENANCE)
    before = len(h.prober.calls)
    await h.steps(3)
    assert len(h.prober.calls) == before
    assert a.id in h.prober.forgotten


async def test_probe_intervals_follow_fast_and_down_intervals() -> None:
    h = Harness(
        health_check_interval_seconds=1.0,
        fast_interval_seconds=0.2,
        down_interval_seconds=3.0,
        unhealthy_threshold=3,
    )
    a = h.add("a", 1)
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


async def test_configuration_change_applies_on_the_next_evaluation() -> None:
    h = Harness(health_check_interval_seconds=5.0, health_check_timeout_seconds=1.0)
    a = h.add("a", 1)
    await h.step()
    h.service.add_proxy(
        FailoverConfig(
            proxy_id="p",
            user_id="u",
            health_check_interval_seconds=0.5,
            health_check_timeout_seconds=0.2,
        )
    )
    await h.step(0.01)
    before = len(h.prober.calls)
    for _ in range(20):
        await h.step(0.1)
    assert len([c for c in h.prober.calls[before:] if c[0] == a.id]) >= 3


async def test_recovery_url_is_posted_with_backoff_then_event_fails_when_spent() -> None:
    h = Harness(
        unhealthy_threshold=1,
        max_recovery_attempts=2,
        recovery_backoff_seconds=2.0,
        down_interval_seconds=1.0,
    )
    a = h.add("a", 1, recovery_url="http://a/recover")
    h.add("b", 2)
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
    [recovery] = [e for e in h.service.events if e.event_type is EventType.RECOVERY]
    assert recovery.status is EventStatus.FAILED
    assert recovery.error_message == "instance still unhealthy after 2 recovery attempts"
    await h.steps(4)
    assert len(h.prober.recovery_posts) == 2  # spent: no new event until health moves


async def test_recovery_event_completes_when_instance_is_healthy_again() -> None:
    h = Harness(unhealthy_threshold=1, healthy_threshold=2, max_recovery_attempts=5)
    a = h.add("a", 1, recovery_url="http://a/recover")
    await h.step()
    h.prober.down.add(a.id)
    await h.steps(1)
    h.prober.down.clear()
    await h.steps(3)
    [recovery] = [e for e in h.service.events if e.event_type is EventType.RECOVERY]
    assert recovery.status is EventStatus.COMPLETED
    assert recovery.target_instance_id == a.id


async def test_one_broken_proxy_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    h.add("a", 1)
    other = FailoverConfig(
        proxy_id="q",
        user_id="u",
        health_check_interval_seconds=1.0,
        health_check_timeout_seconds=0.5,
    )
    h.service.add_proxy(other)
    q1 = h.service.add_instance("q", "q1", endpoint="q1:80")
    real_load = h.service.load_snapshot

    async def broken_load(proxy_id: str) -> Any:
        if proxy_id == "p":
            raise RuntimeError("disk on fire")
        return await real_load(proxy_id)

    h.service.load_snapshot = broken_load  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="proxy_failover.engine"):
        outcomes = await h.steps(3)
    assert {o.error for o in outcomes if o.proxy_id == "p"} == {"RuntimeError: disk on fire"}
    assert h.service.active_id("q") == q1.id
    assert len([r for r in caplog.records if "disk on fire" in r.getMessage()]) == 1


async def test_stale_switch_events_are_closed_by_the_tick() -> None:
    h = Harness()
    h.add("a", 1)
    await h.step()
    stale = h.service.events[0].__class__(
        id="old",
        proxy_id="p",
        user_id="admin",
        event_type=EventType.SWITCHOVER,
        source_instance_id=None,
        target_instance_id=None,
        reason="manual",
        status=EventStatus.IN_PROGRESS,
        triggered_by="admin",
        epoch=1,
        created_at=T0 - timedelta(seconds=400),
    )
    h.service.events.append(stale)
    outcomes = await h.steps(6)
    assert [o.note for o in outcomes if o.event and o.event.id == "old"] == ["stale event closed"]


async def test_dropped_probe_connection_brings_the_next_probe_forward() -> None:
    h = Harness(health_check_interval_seconds=4.0, health_check_timeout_seconds=1.0)
    a = h.add("a", 1)
    await h.step()
    assert len(h.prober.calls) == 1
    await h.step(0.5)
    assert len(h.prober.calls) == 1  # next regular probe is ~4 s away
    assert h.prober.on_connection_lost is not None
    h.prober.on_connection_lost(a.id)  # at 0.5 s: earliest allowed is 0.25 x 4 s = 1 s
    await h.step(0.3)
    assert len(h.prober.calls) == 1
    await h.step(0.25)
    assert [round((t - T0).total_seconds(), 2) for _, t in h.prober.calls] == [0.0, 1.05]


async def test_timeouts_of_probes_started_late_are_not_counted_against_the_instance() -> None:
    h = Harness(unhealthy_threshold=1)
    a = h.add("a", 1)
    await h.step()
    h.prober.down.add(a.id)
    h.prober.duration = 0.5  # = the timeout: these probes time out
    h.clock.advance(2.5)  # the probe due at ~1 s starts 1.5 s late: the engine was overloaded
    await h.engine.tick(h.clock.now)
    await h.engine.wait_for_probes()
    assert h.engine.stats.inconclusive == 1
    assert h.service.instances[a.id].consecutive_failures == 0
    assert h.service.instances[a.id].health_status is HealthStatus.HEALTHY
    await h.step()  # the next one starts on time: its timeout counts
    assert h.engine.stats.inconclusive == 1
    assert h.service.instances[a.id].health_status is HealthStatus.UNHEALTHY


async def test_instance_that_habitually_drops_idle_connections_gets_no_probe_storm() -> None:
    h = Harness(health_check_interval_seconds=4.0, health_check_timeout_seconds=1.0)
    a = h.add("a", 1)
    await h.step()
    assert h.prober.on_connection_lost is not None
    for _ in range(4):  # each probe's connection is dropped right after: early probe each time?
        h.prober.on_connection_lost(a.id)
        await h.step(1.05)
    # two early probes found it fine; then drops no longer bring probes forward
    assert h.engine.stats.early_probes == 2
    assert len(h.prober.calls) == 3


async def test_routine_results_are_recorded_in_batches() -> None:
    h = Harness()
    for n in range(5):
        h.add(f"i{n}", n + 1)
    await activated(h)
    checks, batches = h.service.recorded_checks, h.service.recorded_batches
    await h.step(1.1)  # five successes of steadily healthy instances: one batch
    assert h.service.recorded_checks == checks + 5
    assert h.service.recorded_batches == batches + 1


async def _until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (a bounded number of turns, no wall clock)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_a_result_that_may_move_health_is_recorded_at_once_with_the_pending_ones() -> None:
    h = Harness()
    h.engine = Engine(h.service, h.prober, clock=h.clock, first_probe_spread=0, flush_window=3600)
    h.service.on_change = h.engine.notify
    a, b = h.add("a", 1), h.add("b", 2)
    await activated(h)  # first probes (unknown instances) are not routine: recorded at once
    checks = h.service.recorded_checks
    calls = len(h.prober.calls)
    h.clock.advance(1.1)
    await h.engine.tick(h.clock.now)
    await _until(lambda: len(h.prober.calls) == calls + 2)
    for _ in range(100):
        await asyncio.sleep(0)
    assert h.service.recorded_checks == checks  # routine successes wait for the (1 h) window
    # a failing result (here a new instance's first probe) cannot wait: it takes them along
    c = h.add("c", 3)
    h.prober.down.add(c.id)
    h.clock.advance(1.1)
    await h.engine.tick(h.clock.now)
    await _until(lambda: h.service.instances[c.id].consecutive_failures == 1)
    assert h.service.recorded_checks == checks + 3
    assert h.service.instances[a.id].total_requests == 2
    assert h.service.instances[b.id].total_requests == 2
    await h.engine._shutdown()  # cancel the hour-long flush timer


async def test_the_heap_is_frozen_once_the_start_settled_and_refrozen_hourly() -> None:
    import gc

    from proxy_failover import engine as engine_module

    h = Harness()
    engine = Engine(h.service, h.prober, clock=h.clock, freeze_heap=True)
    start = h.clock.now.timestamp()
    engine._run_started = start
    try:
        gc.unfreeze()
        engine._tend_heap(start + engine_module.HEAP_FREEZE_AFTER - 1)
        assert gc.get_freeze_count() == 0
        engine._tend_heap(start + engine_module.HEAP_FREEZE_AFTER)
        assert gc.get_freeze_count() > 0
        first = engine._heap_frozen_at
        engine._tend_heap(start + engine_module.HEAP_FREEZE_AFTER + 60)
        assert engine._heap_frozen_at == first  # not every tick
        later = start + engine_module.HEAP_FREEZE_AFTER + engine_module.HEAP_REFREEZE_PERIOD
        engine._tend_heap(later)
        assert engine._heap_frozen_at == later
    finally:
        gc.unfreeze()
