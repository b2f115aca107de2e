"""The engine's periodic evaluation re-reads a proxy only when its change counter moved, and
still sees every change another replica commits (that replica never wakes this engine)."""

from __future__ import annotations

import random
from datetime import timedelta

from proxy_failover.bootstrap import open_service
from proxy_failover.core.model import CheckResult, DecisionAction
from proxy_failover.engine import Engine, EngineSettings
from proxy_failover.service import ProxyFailoverService
from tests.helpers.clock import FakeClock
from tests.helpers.scenario import activate, proxy_with
from tests.helpers.scripted_prober import ScriptedProber


async def test_unchanged_proxies_are_not_reloaded_but_another_replicas_change_is_seen(
    service: ProxyFailoverService, database_url: str, clock: FakeClock
) -> None:
    clock.step = timedelta(0)
    made = await proxy_with(service, "p1", ["a", "b", "c"], config={"enableAutoFailback": False})
    await activate(service, "p1", made["a"])
    loads: list[str] = []
    load_snapshot = service.load_snapshot

    async def counted(proxy_id: str):  # type: ignore[no-untyped-def]
        loads.append(proxy_id)
        return await load_snapshot(proxy_id)

    service.load_snapshot = counted  # type: ignore[method-assign]
    prober = ScriptedProber(clock)
    engine = Engine(
        service,
        prober,
        EngineSettings(first_probe_spread=0),
        clock=clock,
        rng=random.Random(1),
    )

    async def tick() -> list[DecisionAction]:
        clock.advance(1.1)
        outcomes = await engine.tick(clock.now)
        await engine.wait_for_probes()
        return [o.decision.action for o in outcomes if o.decision is not None]

    assert await tick() == [DecisionAction.NONE]  # first sight: loaded
    assert await tick() == [DecisionAction.NONE]  # counter now known: loaded once more
    before = len(loads)
    for _ in range(3):  # nothing changed: decided again, on the snapshot already held
        assert await tick() == [DecisionAction.NONE]
    assert len(loads) == before
    # Routine probe successes (the bulk path) do not move the counter either.
    await service.record_probe_results([(made["b"].id, CheckResult(True, 2.0))])
    assert await tick() == [DecisionAction.NONE]
    assert len(loads) == before

    async with open_service(database_url, clock=clock, migrate=False) as other_replica:
        await other_replica.update_instance_health(made["a"].id, "unhealthy")
    assert await tick() == [DecisionAction.FAILOVER]  # reloaded, and acted on it
    assert len(loads) == before + 1
    status = await service.get_redundancy_status("p1")
    assert status is not None
    assert status.active_instance_id == made["b"].id


async def test_every_locked_write_moves_the_counter_and_routine_successes_do_not(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a"])
    await proxy_with(service, "p2", ["z"])
    versions = await service.proxy_versions()
    await service.update_instance_health(made["a"].id, "healthy")  # a repeat still locks
    after_report = await service.proxy_versions()
    assert after_report["p1"] > versions["p1"]
    assert after_report["p2"] == versions["p2"]
    await service.record_probe_results([(made["a"].id, CheckResult(True, 1.0))])
    assert await service.proxy_versions() == after_report
    await service.record_probe_results([(made["a"].id, CheckResult(False, 1.0, "refused"))])
    assert (await service.proxy_versions())["p1"] > after_report["p1"]


async def test_evaluations_due_within_the_window_share_a_tick_and_one_counter_read(
    service: ProxyFailoverService, clock: FakeClock
) -> None:
    clock.step = timedelta(0)
    for proxy_id in ("p1", "p2", "p3"):
        await proxy_with(service, proxy_id, ["a"])
    reads: list[int] = []
    proxy_versions = service.proxy_versions

    async def counted():  # type: ignore[no-untyped-def]
        reads.append(1)
        return await proxy_versions()

    service.proxy_versions = counted  # type: ignore[method-assign]

    async def first_tick(window: float) -> set[str]:
        # first evaluations land at random within 40 ms of discovery (the first-probe spread)
        settings = EngineSettings(first_probe_spread=0.04, evaluation_window=window)
        engine = Engine(service, ScriptedProber(clock), settings, clock=clock, rng=random.Random(3))
        outcomes = await engine.tick(clock.now)
        await engine.wait_for_probes()
        return {o.proxy_id for o in outcomes if o.decision is not None}

    assert await first_tick(0.0) == set()  # none due yet without the window: none read
    assert reads == []
    assert await first_tick(0.05) == {"p1", "p2", "p3"}  # all due within it: one tick ...
    assert reads == [1]  # ... and one read of the change counters for the three
